"""Training losses over the supervised positions of a batch. One registry, keyed by `loss`.

Each loss takes the user states at the supervised positions, their positive item ids, the
model (for item vectors) and a seeded generator (for negatives), and returns a scalar.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from virtualmle.models.base import SequentialRecommender

LossFn = Callable[[torch.Tensor, torch.Tensor, SequentialRecommender, int, torch.Generator], torch.Tensor]


def bce_loss(
    states: torch.Tensor,
    positives: torch.Tensor,
    model: SequentialRecommender,
    negatives: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """Original SASRec: binary cross-entropy, `negatives` uniform negatives per position.

    states: (M, D); positives: (M,). Negatives are drawn per position (uniform over all items,
    not excluding the user's history: a collision has probability ~1/num_items).
    """
    m = states.size(0)
    neg = torch.randint(1, model.cfg.num_items + 1, (m, negatives), generator=gen, device=states.device)
    temp = model.cfg.temperature
    pos_logit = (states * model.item_vectors(positives)).sum(-1) / temp  # (M,)
    neg_logit = (states.unsqueeze(1) * model.item_vectors(neg)).sum(-1) / temp  # (M, K)
    pos_loss = F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit))
    neg_loss = F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))
    return pos_loss + neg_loss


def sampled_softmax_loss(
    states: torch.Tensor,
    positives: torch.Tensor,
    model: SequentialRecommender,
    negatives: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """Softmax over the positive and `negatives` uniform negatives, with temperature.

    One set of negatives is shared by every position of the batch: one (M, D) x (D, K) matmul
    instead of M gathers, several times faster, and uniform sampling needs no logQ correction.
    A negative that equals a row's positive is masked out for that row.
    """
    neg = torch.randint(1, model.cfg.num_items + 1, (negatives,), generator=gen, device=states.device)
    temp = model.cfg.temperature
    pos_logit = (states * model.item_vectors(positives)).sum(-1, keepdim=True)  # (M, 1)
    neg_logit = states @ model.item_vectors(neg).T  # (M, K)
    neg_logit = neg_logit.masked_fill(neg[None, :] == positives[:, None], float("-inf"))
    logits = torch.cat([pos_logit, neg_logit], dim=1) / temp  # (M, 1 + K)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def softmax_loss(
    states: torch.Tensor,
    positives: torch.Tensor,
    model: SequentialRecommender,
    negatives: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """Full softmax cross-entropy over all items (`negatives` is unused)."""
    logits = model.score_all(states)[:, 1:]  # (M, N): drop the padding column
    return F.cross_entropy(logits, positives - 1)


LOSSES: dict[str, LossFn] = {
    "bce": bce_loss,
    "sampled_softmax": sampled_softmax_loss,
    "softmax": softmax_loss,
}
