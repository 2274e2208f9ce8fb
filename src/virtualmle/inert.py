"""Parameters a configuration never reads: changing one alone trains the same model.

`inert_params(config)` names them, from the trainer's own rules: the negatives of a loss that
draws none, the sampler of a loss that does not use it, logQ where it is a constant shift, the
recency pooling's `pool_k` under last-position pooling, the co-occurrence prior's settings with
its weight at 0. Two configurations that differ only there are one configuration: the agent's
duplicate check (`agent/space_view.py` `SpaceView.key`) treats them so, instead of spending a
trial to learn that a no-op did nothing. A value the configuration does not give (a parameter
left to its default outside the space) is never assumed, so nothing is called inert on a guess.

A top-level module with no imports, so the agent's space view reads it without loading torch;
a change to what the trainer reads must be mirrored here (tests/test_inert.py trains both sides
of each rule and checks the metrics are equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["inert_params"]


def inert_params(config: Mapping[str, Any]) -> frozenset[str]:
    """The parameters of `config` whose value cannot change what this configuration trains or
    how it ranks (training/losses.py, training/priors.py, models/base.py pooling)."""
    loss = config.get("loss")
    sampler = config.get("neg_sampler")
    out: set[str] = set()
    if loss in ("bce", "softmax"):
        out.add("neg_sampler")  # bce draws uniform negatives per position; softmax draws none
    if loss == "softmax" or (loss == "sampled_softmax" and sampler == "in_batch"):
        out.add("negatives")  # all items, or the batch's own positives
    if loss in ("bce", "softmax", "gbce") or (loss == "sampled_softmax" and sampler == "uniform"):
        out.add("logq")  # only sampled softmax subtracts log q; for uniform q it is a constant
    if loss is not None and loss != "gbce":
        out.add("gbce_t")
    if config.get("pooling") == "last":
        out.add("pool_k")
    if _is_zero(config.get("prior_cooc")):
        out.update(("prior_window", "prior_recent_k", "prior_norm"))
    return frozenset(out)


def _is_zero(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0
