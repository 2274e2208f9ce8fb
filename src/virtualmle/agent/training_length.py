"""What a change of training length alone can measure: nothing, when it would train its parent's
run again epoch for epoch (`reruns_parent`). The agent drops such candidates (agent.py), and an
LLM's own change of that kind is replaced by the surrogate's pick; the full-fidelity study spent
281 s of its 45 minutes retraining its default with a cap of 170 epochs instead of 200, after the
default had early-stopped at epoch 42. Validating every k epochs (``eval_every``) is part of the
training length: patience counts validations, so a run stops after ``patience * eval_every``
epochs without improvement, and a coarser validation never finds a better epoch (a rerun of
step 4 spent 416 s of its 45 minutes training its default again with ``eval_every`` 2 while the
default still trained).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from virtualmle.agent.candidates import Candidate
from virtualmle.agent.diagnostics import Observation
from virtualmle.search.method import FIDELITY_KEYS


def _patience(p: Any) -> float:
    return math.inf if not p else float(p)  # 0: never stops early


def reruns_parent(changed: dict[str, list[Any]], parent: Observation, *, running: bool = False,
                  schedule: str = "constant") -> bool:
    """Whether a change of training length alone (``max_epochs``, ``patience``, ``min_delta``,
    ``eval_every``: `FIDELITY_KEYS`) would train `parent`'s run again, epoch for epoch (or validated more coarsely): a whole trial
    that measures nothing.

    `parent` trained epochs 1..``last_epoch`` and ended by early stopping or at its cap (its own
    ``max_epochs``, or a search's ``--max-epochs`` below it). The same run comes out when the new
    cap still reaches that epoch and the run neither stops sooner nor goes on longer: after an
    early stop, the same patience in epochs (``patience * eval_every``); after the cap, the same
    cap and at least as much patience (0 means none) and no larger ``min_delta`` (a smaller one
    resets patience at least as often; after an early stop any change of it is a new run). With a decaying learning-rate `schedule` (searched or fixed) the schedule
    stretches with ``max_epochs``, so a ``max_epochs`` change is always a new run. `running`: the
    parent is still training (the default, while another worker proposes): a change of its
    training length alone would repeat its first epochs at best, so it waits for the curve.
    """
    if not changed or set(changed) - FIDELITY_KEYS:
        return False
    if running:
        return True
    last, params = parent.last_epoch, parent.params
    if last is None or parent.stopped not in ("early_stop", "max_epochs"):
        return False
    if "max_epochs" in changed and schedule != "constant":
        return False
    old_max, new_max = changed.get("max_epochs", [params.get("max_epochs")] * 2)
    old_p, new_p = changed.get("patience", [params.get("patience")] * 2)
    old_k, new_k = changed.get("eval_every", [params.get("eval_every") or 1] * 2)
    old_d, new_d = changed.get("min_delta", [params.get("min_delta") or 0.0] * 2)
    if new_d != old_d and (parent.stopped == "early_stop" or not new_d < old_d):
        return False  # it may stop at another epoch: a new run
    if not isinstance(old_k, int) or not isinstance(new_k, int) or new_k < old_k:
        return False  # validated more often: it may find a better epoch
    old_p, new_p = _patience(old_p) * old_k, _patience(new_p) * new_k  # in epochs
    if not isinstance(new_max, (int, float)) or new_max < last:
        return False  # cut before the epoch it ended on: a new run
    if parent.stopped == "early_stop":
        return new_p == old_p
    cap_binding = isinstance(old_max, (int, float)) and last < old_max  # a search's --max-epochs ended it
    return (cap_binding or new_max == old_max) and new_p >= old_p


def rerun_check(parent: Observation, *, running: bool, fixed: dict[str, Any]) -> Callable[[Candidate], bool]:
    """`reruns_parent` for candidates made from `parent`, each with the learning-rate schedule it
    would train with (searched, else fixed by the space)."""
    def check(c: Candidate) -> bool:
        schedule = {**fixed, **c.config}.get("lr_schedule", "constant")
        return reruns_parent(c.changed, parent, running=running, schedule=schedule)
    return check
