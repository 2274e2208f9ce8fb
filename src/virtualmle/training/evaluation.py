"""Full-ranking leave-one-out evaluation (REFERENCE.md section 2), the only one in the package.

Validation ranks seq[-2] given seq[:-2]; test ranks seq[-1] given seq[:-1]. The target is ranked
against ALL items. Which history items leave the ranking is the evaluation mask (`eval_mask`):

- ``history``: every history item is excluded; a target that repeats a history item is excluded
  with them and counts as a miss (the S3-Rec convention);
- ``none``: nothing is excluded (data where repeats are the point);
- ``history_except_target``: history excluded except the target (the VirtualMLE release's rule).
  It leaks: a repeated target is then the only history item left, so a model that scores its
  history high finds it at rank 1. Kept only to compare with the release.

``auto`` resolves to ``history`` when repeated targets are rare (< `REPEAT_THRESHOLD` of the
validation and of the test targets), else ``none``. Ranks are 0-based counts of items scoring
strictly higher than the target, so ties are resolved in the target's favour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from virtualmle.data.dataset import SequenceData
from virtualmle.data.profile import repeated_target_shares

logger = logging.getLogger(__name__)

KS: tuple[int, ...] = (5, 10, 20)
EVAL_BATCH = 2048  # users per scoring batch: big enough to amortise per-batch overhead
MASKS: tuple[str, ...] = ("history", "none", "history_except_target")
# Above this share of repeated validation or test targets, `auto` ranks all items (`none`).
REPEAT_THRESHOLD = 0.01


def resolve_eval_mask(mask: str, data: SequenceData) -> str:
    """The concrete mask for `data`: `auto` becomes `history` or `none` (see the module doc).

    `history_except_target` logs a warning when the data has repeated targets, because then its
    metrics reward scoring the history high.
    """
    if mask not in (*MASKS, "auto"):
        raise ValueError(f"unknown eval_mask {mask!r}")
    if mask in ("history", "none"):
        return mask
    valid_share, test_share = repeated_target_shares(data)
    if mask == "auto":
        return "history" if max(valid_share, test_share) < REPEAT_THRESHOLD else "none"
    if valid_share or test_share:
        logger.warning(
            "%s: eval_mask=history_except_target with %.2f%% of validation and %.2f%% of test "
            "targets repeating a history item: a model that scores its history high is rewarded "
            "(use history or none)", data.name, 100 * valid_share, 100 * test_share,
        )
    return mask

# The ranking's one extension point, outside the protocol: called with a batch's model scores
# (B, N + 1) and its left-padded histories (B, T), it returns the scores to rank (it may modify
# and return the same tensor). The train-split priors use it (training/priors.py, ScorePriors).
ScoreAdjust = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def metrics_from_ranks(ranks: torch.Tensor | np.ndarray) -> dict[str, float]:
    """HR@5/10/20, NDCG@5/10/20 and MRR from 0-based target ranks (one per user)."""
    r = torch.as_tensor(ranks, dtype=torch.float64)
    out: dict[str, float] = {}
    for k in KS:
        out[f"hr@{k}"] = float((r < k).double().mean())
    for k in KS:
        out[f"ndcg@{k}"] = float(((r < k).double() / torch.log2(r + 2.0)).mean())
    out["mrr"] = float((1.0 / (r + 1.0)).mean())
    return out


def rank_targets(
    scores: torch.Tensor,
    targets: torch.Tensor,
    history_rows: torch.Tensor,
    history_items: torch.Tensor,
    missed: torch.Tensor | None = None,
) -> torch.Tensor:
    """0-based rank of each row's target among all items, the given history items excluded.

    The target keeps its own score even when its column is excluded; rows flagged in `missed`
    (a target excluded with the history, mask `history`) and rows whose target score is NaN get
    the worst rank.

    Args:
        scores: (B, num_items + 1) scores; column 0 is padding and never ranked. Modified in place.
        targets: (B,) target item ids.
        history_rows, history_items: (H,) coordinates of the history items to exclude.
        missed: (B,) bool, rows that count as a miss whatever the scores; None = none.
    Returns:
        (B,) int64 ranks.
    """
    target_scores = scores.gather(1, targets[:, None])  # (B, 1), read before any masking
    scores[:, 0] = -torch.inf
    scores.index_put_((history_rows, history_items), torch.tensor(-torch.inf, dtype=scores.dtype))
    # The target keeps its own score (target_scores); its column may now be -inf, which only
    # removes it from the "strictly higher" count, as it should. In-place gt_ + float sum is
    # about 2.5x faster on CPU than summing a fresh bool tensor (exact below 2**24 items).
    ranks = scores.gt_(target_scores).sum(dim=1).long()
    # A NaN target score would otherwise beat nothing and count as rank 0: make it the worst.
    worst = target_scores.squeeze(1).isnan()
    if missed is not None:
        worst |= missed
    return ranks.masked_fill_(worst, scores.size(1) - 1)


@dataclass
class EvalBatch:
    """One precomputed scoring batch: left-padded histories, targets and history coordinates."""

    items: torch.Tensor  # (B, T) left-padded with 0, T = longest history in the batch (<= max_len)
    timestamps: torch.Tensor | None  # (B, T) or None
    targets: torch.Tensor  # (B,)
    history_rows: torch.Tensor  # (H,) row in this batch
    history_items: torch.Tensor  # (H,) item id to exclude
    missed: torch.Tensor | None = None  # (B,) bool: target excluded with the history (a miss)


def build_eval_batches(
    data: SequenceData,
    split: str,
    max_len: int,
    device: str | torch.device = "cpu",
    mask: str = "history",
) -> list[EvalBatch]:
    """Precompute the scoring batches of a split ("valid" or "test") once per trial.

    `mask` is a resolved evaluation mask (`history`, `none`, `history_except_target`; see
    `resolve_eval_mask`). Users are sorted by history length so each batch is padded only to its
    own longest history. Users whose history would be empty (fewer than 2 items for test, 3 for
    valid) are skipped.
    """
    if mask not in MASKS:
        raise ValueError(f"eval mask must be one of {', '.join(MASKS)}, got {mask!r}")
    cut = {"valid": 2, "test": 1}[split]
    users = [u for u, s in enumerate(data.sequences) if len(s) > cut]
    lengths = np.array([min(len(data.sequences[u]) - cut, max_len) for u in users])
    order = [users[i] for i in np.argsort(lengths, kind="stable")]
    batches: list[EvalBatch] = []
    for start in range(0, len(order), EVAL_BATCH):
        chunk = order[start : start + EVAL_BATCH]
        hists = [data.sequences[u][:-cut] for u in chunk]
        t = max(min(len(h), max_len) for h in hists)
        items = np.zeros((len(chunk), t), dtype=np.int64)
        ts = np.zeros((len(chunk), t), dtype=np.int64) if data.timestamps is not None else None
        rows, cols = [], []
        for i, (u, h) in enumerate(zip(chunk, hists)):
            recent = h[-max_len:]
            items[i, t - len(recent) :] = recent
            if ts is not None:
                ts[i, t - len(recent) :] = data.timestamps[u][: len(h)][-max_len:]
            if mask != "none":  # exclude the whole history, not only the part the model sees
                rows.append(np.full(len(h), i, dtype=np.int64))
                cols.append(np.asarray(h, dtype=np.int64))
        targets = np.array([data.sequences[u][-cut] for u in chunk], dtype=np.int64)
        missed = None
        if mask == "history":
            missed = torch.from_numpy(np.array([bool(np.any(h == y)) for h, y in zip(hists, targets)])).to(device)
        empty = [np.zeros(0, dtype=np.int64)]
        batches.append(
            EvalBatch(
                items=torch.from_numpy(items).to(device),
                timestamps=None if ts is None else torch.from_numpy(ts).to(device),
                targets=torch.from_numpy(targets).to(device),
                history_rows=torch.from_numpy(np.concatenate(rows or empty)).to(device),
                history_items=torch.from_numpy(np.concatenate(cols or empty)).to(device),
                missed=missed,
            )
        )
    return batches


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, batches: list[EvalBatch], score_adjust: ScoreAdjust | None = None
) -> dict[str, float]:
    """Full-ranking metrics of `model` over precomputed batches (see `build_eval_batches`).

    `score_adjust` (optional) rewrites each batch's scores before ranking (see `ScoreAdjust`).
    """
    was_training = model.training
    model.eval()
    ranks = []
    item_table = model.output_embeddings()  # (N + 1, D), computed once for all batches
    # One score buffer for all batches (see SequentialRecommender.score_all).
    buf = item_table.new_empty(max(len(b.targets) for b in batches), item_table.size(0))
    for b in batches:
        states = model.encode(b.items, b.timestamps)[:, -1, :]  # (B, D): last position
        scores = model.score_all(states, item_table, out=buf[: len(b.targets)])  # (B, N + 1)
        if score_adjust is not None:
            scores = score_adjust(scores, b.items)  # (B, N + 1)
        ranks.append(rank_targets(scores, b.targets, b.history_rows, b.history_items, b.missed))
    model.train(was_training)
    return metrics_from_ranks(torch.cat(ranks).cpu())
