"""Training losses over the supervised positions of a batch. One registry, keyed by `loss`.

Each loss takes the user states at the supervised positions, their positive item ids, the
model (for item vectors) and a `LossContext` (negatives, sampler, seeded generator, options),
and returns a scalar:

- `bce`: binary cross-entropy, `negatives` uniform negatives per position (original SASRec);
- `sampled_softmax`: softmax over the positive and shared sampled negatives (`neg_sampler`
  uniform | popularity | in_batch), optionally logQ-corrected (`logq`);
- `softmax`: full cross-entropy over all items, chunked over rows (`ce_chunk`) so the
  (rows x items) logits never exist at once; with `precision=bf16` its matmuls run in bfloat16
  (log-sum-exp, softmax and gradient accumulation stay in float32);
- `gbce`: gSASRec's generalised BCE (Petrov & Macdonald, RecSys 2023): the positive's term is
  raised to the power beta, calibrated by `gbce_t` so the sampled model's scores approach the
  full-softmax probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from virtualmle.models.base import SequentialRecommender

SAMPLERS: tuple[str, ...] = ("uniform", "popularity", "in_batch")


class NegativeSampler:
    """Draws shared negatives for a batch and knows each item's sampling probability.

    `uniform` draws item ids uniformly from 1..N; `popularity` in proportion to the item's count
    in the training part of the sequences (every item gets at least count 1, so none is never
    drawn); `in_batch` draws nothing: the batch's own positives are the candidates, and the
    probability of an item being one of them is its popularity.
    """

    def __init__(self, kind: str, num_items: int, counts: np.ndarray | None = None) -> None:
        if kind not in SAMPLERS:
            raise ValueError(f"unknown neg_sampler {kind!r}: use one of {', '.join(SAMPLERS)}")
        self.kind = kind
        self.num_items = num_items
        if kind == "uniform":
            self.probs = None
        else:
            if counts is None or len(counts) != num_items + 1:
                raise ValueError("popularity and in_batch sampling need per-item counts (num_items + 1)")
            c = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
            c[0] = 0.0  # padding is never a candidate
            self.probs = torch.tensor(c / c.sum(), dtype=torch.float32)

    @classmethod
    def from_sequences(cls, kind: str, sequences: list[np.ndarray], num_items: int) -> NegativeSampler:
        """Counts from each sequence's training part (`seq[:-2]`): never a validation/test target."""
        counts = np.zeros(num_items + 1, dtype=np.float64)
        if kind != "uniform":
            for s in sequences:
                np.add.at(counts, s[:-2], 1.0)
        return cls(kind, num_items, counts)

    def to(self, device: torch.device | str) -> NegativeSampler:
        if self.probs is not None:
            self.probs = self.probs.to(device)
        return self

    def sample(self, k: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
        """(k,) item ids; uniform draws use the same call as the release (same ids per seed)."""
        if self.kind == "uniform":
            return torch.randint(1, self.num_items + 1, (k,), generator=gen, device=device)
        return torch.multinomial(self.probs, k, replacement=True, generator=gen)

    def log_q(self, ids: torch.Tensor) -> torch.Tensor:
        """Log sampling probability of each id (a constant for uniform)."""
        if self.probs is None:
            return torch.full(ids.shape, -math.log(self.num_items), device=ids.device)
        return torch.log(self.probs[ids])


@dataclass
class LossContext:
    """What a loss needs besides states and positives, built once per trial."""

    negatives: int  # negatives per positive (bce, sampled_softmax, gbce)
    gen: torch.Generator  # seeded: negatives are reproducible
    sampler: NegativeSampler
    logq: bool = False  # subtract log q(item) from sampled logits (sampled_softmax)
    gbce_t: float = 0.75  # gBCE calibration, 0 = plain BCE, 1 = fully calibrated
    ce_chunk: int = 0  # full softmax: rows per chunk, 0 = auto (see `auto_chunk`)
    bf16: bool = False  # full softmax: bfloat16 matmuls (precision=bf16)


LossFn = Callable[[torch.Tensor, torch.Tensor, SequentialRecommender, LossContext], torch.Tensor]


def bce_loss(
    states: torch.Tensor, positives: torch.Tensor, model: SequentialRecommender, ctx: LossContext
) -> torch.Tensor:
    """Original SASRec: binary cross-entropy, `negatives` uniform negatives per position.

    states: (M, D); positives: (M,). Negatives are drawn per position (uniform over all items,
    not excluding the user's history: a collision has probability ~1/num_items).
    """
    m = states.size(0)
    neg = torch.randint(1, model.cfg.num_items + 1, (m, ctx.negatives), generator=ctx.gen, device=states.device)
    temp = model.cfg.temperature
    pos_logit = (states * model.item_vectors(positives)).sum(-1) / temp  # (M,)
    neg_logit = (states.unsqueeze(1) * model.item_vectors(neg)).sum(-1) / temp  # (M, K)
    pos_loss = F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit))
    neg_loss = F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))
    return pos_loss + neg_loss


def _shared_negative_logits(
    states: torch.Tensor, positives: torch.Tensor, model: SequentialRecommender, ctx: LossContext
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M, 1) positive logits, (M, K) logits of K negatives shared by the batch, and their ids.

    One (M, D) x (D, K) matmul instead of M gathers. A negative equal to a row's positive gets
    -inf for that row (an accidental hit is not a negative).
    """
    neg = ctx.sampler.sample(ctx.negatives, ctx.gen, states.device)
    pos_logit = (states * model.item_vectors(positives)).sum(-1, keepdim=True)  # (M, 1)
    neg_logit = states @ model.item_vectors(neg).T  # (M, K)
    neg_logit = neg_logit.masked_fill(neg[None, :] == positives[:, None], float("-inf"))
    return pos_logit, neg_logit, neg


def sampled_softmax_loss(
    states: torch.Tensor, positives: torch.Tensor, model: SequentialRecommender, ctx: LossContext
) -> torch.Tensor:
    """Softmax over the positive and sampled negatives, divided by the temperature.

    Negatives come from `ctx.sampler` and are shared by every position of the batch; with
    `in_batch` they are the batch's distinct positives. With `ctx.logq`, log q(item) is
    subtracted from every candidate's logit (positive included, as in Yi et al. 2019 and
    TensorFlow's `sampled_softmax_loss`): popular items, sampled more often, are not pushed
    down more than the full softmax would. Uniform q is a constant shift: no effect.
    """
    temp = model.cfg.temperature
    if ctx.sampler.kind == "in_batch":
        cand, label = torch.unique(positives, return_inverse=True)  # (U,), (M,)
        logits = states @ model.item_vectors(cand).T / temp  # (M, U): other rows' positives are negatives
        if ctx.logq:
            logits = logits - ctx.sampler.log_q(cand)[None, :]
        return F.cross_entropy(logits, label)
    pos_logit, neg_logit, neg = _shared_negative_logits(states, positives, model, ctx)
    logits = torch.cat([pos_logit, neg_logit], dim=1) / temp  # (M, 1 + K)
    if ctx.logq:
        log_q = torch.cat([
            ctx.sampler.log_q(positives)[:, None].expand(-1, 1),
            ctx.sampler.log_q(neg)[None, :].expand(len(positives), -1),
        ], dim=1)
        logits = logits - log_q
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


class _ChunkedSoftmaxCE(torch.autograd.Function):
    """Mean cross-entropy of `states @ table.T` against `targets`, `chunk` rows at a time.

    The loss is a scalar, so its gradients are known up to the factor `grad_out` as soon as each
    chunk's softmax is: forward computes the loss and both gradients in one pass over the chunks,
    and backward only scales them. Each chunk's (chunk, N) logits are written into one reused
    buffer and turned into log-probabilities, then probabilities, in place; so peak memory is one
    (chunk, N) block, no logits are recomputed, and no large tensor is allocated per chunk (on
    CPU a fresh block per chunk costs page faults). With `mm_dtype=torch.bfloat16` the three
    matmuls per chunk run in bfloat16 (several times faster on CPUs with AVX512-BF16 / AMX)
    while the log-sum-exp, the softmax and both gradients' accumulation stay in float32.
    """

    @staticmethod
    def forward(ctx, states: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, chunk: int,
                mm_dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = mm_dtype or states.dtype
        s_mm, t_mm = states.to(dtype), table.to(dtype)
        t_mm_t = t_mm.T.contiguous()  # (D, N): the logits matmul's fast layout
        m = states.size(0)
        grad_states = torch.empty_like(states) if ctx.needs_input_grad[0] else None
        grad_table = torch.zeros_like(table) if ctx.needs_input_grad[1] else None
        buf = states.new_empty((min(chunk, m), table.size(0)))
        low = s_mm.new_empty(buf.shape) if dtype != states.dtype else None
        total = states.new_zeros((), dtype=torch.float64)
        for i in range(0, m, chunk):
            s, tgt = s_mm[i : i + chunk], targets[i : i + chunk]
            c = len(s)
            if low is None:
                logp = torch.mm(s, t_mm_t, out=buf[:c])
            else:
                logp = buf[:c].copy_(torch.mm(s, t_mm_t, out=low[:c]))
            logp -= torch.logsumexp(logp, dim=1, keepdim=True)  # log-probabilities, in place
            total -= logp.gather(1, tgt[:, None]).sum(dtype=torch.float64)
            if grad_states is None and grad_table is None:
                continue
            g = logp.exp_()  # probabilities, in place
            g[torch.arange(c, device=g.device), tgt] -= 1.0  # d(sum of row losses) / d(logits)
            g_mm = g if low is None else low[:c].copy_(g)
            if grad_states is not None:
                grad_states[i : i + c] = g_mm @ t_mm  # cast to float32 by the assignment
            if grad_table is not None:
                if low is None:
                    grad_table.addmm_(g_mm.T, s)
                else:
                    grad_table += (g_mm.T @ s).to(table.dtype)
        ctx.save_for_backward(grad_states, grad_table)  # None where that input needs no gradient
        ctx.rows = m
        return (total / m).to(states.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_states, grad_table = ctx.saved_tensors
        scale = grad_out / ctx.rows
        return (grad_states * scale if grad_states is not None else None,
                grad_table * scale if grad_table is not None else None, None, None, None)


# Auto chunking: logits up to 2**24 elements (64 MB in fp32) are built whole, as the release did;
# larger ones in chunks of about 2**23 elements (~690 rows at 12k items). Measured on this CPU
# (docs/training.md, "Losses"): chunks of ~512 rows cost the same time as whole logits.
_WHOLE_LIMIT = 2**24
_CHUNK_ELEMENTS = 2**23


def auto_chunk(rows: int, num_items: int, ce_chunk: int = 0) -> int:
    """Rows per chunk for the full softmax (`rows` or more = no chunking)."""
    if ce_chunk > 0:
        return ce_chunk
    if rows * num_items <= _WHOLE_LIMIT:
        return rows
    return max(1, _CHUNK_ELEMENTS // num_items)


def softmax_loss(
    states: torch.Tensor, positives: torch.Tensor, model: SequentialRecommender, ctx: LossContext
) -> torch.Tensor:
    """Full softmax cross-entropy over all items, rows chunked past a size (`auto_chunk`).

    With `ctx.bf16` the chunked path is always taken, its matmuls in bfloat16.
    """
    chunk = auto_chunk(states.size(0), model.cfg.num_items, ctx.ce_chunk)
    if chunk >= states.size(0) and not ctx.bf16:
        logits = model.score_all(states)[:, 1:]  # (M, N): drop the padding column
        return F.cross_entropy(logits, positives - 1)
    table = model.output_embeddings()[1:].float()  # (N, D)
    scaled = states.float() / model.cfg.temperature
    # Under autocast (precision=bf16) the function's own casts decide each op's precision.
    with torch.autocast(states.device.type, enabled=False):
        return _ChunkedSoftmaxCE.apply(scaled, table, positives - 1, chunk, torch.bfloat16 if ctx.bf16 else None)


def gbce_beta(negatives: int, num_items: int, t: float) -> float:
    """gSASRec's exponent of the positive's sigmoid: alpha (t (1 - 1/alpha) + 1/alpha).

    alpha = k / (N - 1) is the sampling rate of k uniform negatives among the N - 1 non-targets;
    t = 0 gives beta = 1 (plain BCE), t = 1 gives beta = alpha (fully calibrated).
    """
    alpha = negatives / max(num_items - 1, 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def gbce_loss(
    states: torch.Tensor, positives: torch.Tensor, model: SequentialRecommender, ctx: LossContext
) -> torch.Tensor:
    """Generalised BCE over the positive and shared sampled negatives (mean over all logits).

    The positive's term is -beta log sigmoid(s+) (= -log sigmoid(s+)^beta), the negatives' terms
    -log(1 - sigmoid(s-)); beta from `gbce_beta` counters the overconfidence BCE learns from few
    negatives. beta assumes uniform negatives; other samplers are allowed but not calibrated.
    """
    temp = model.cfg.temperature
    pos_logit, neg_logit, _ = _shared_negative_logits(states, positives, model, ctx)
    beta = gbce_beta(ctx.negatives, model.cfg.num_items, ctx.gbce_t)
    pos = beta * F.softplus(-pos_logit / temp)  # (M, 1)
    neg = F.softplus(neg_logit / temp)  # (M, K); accidental hits are -inf: softplus gives 0
    return torch.cat([pos, neg], dim=1).mean()


LOSSES: dict[str, LossFn] = {
    "bce": bce_loss,
    "sampled_softmax": sampled_softmax_loss,
    "softmax": softmax_loss,
    "gbce": gbce_loss,
}
