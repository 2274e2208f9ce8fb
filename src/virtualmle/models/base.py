"""The parts SASRec and HSTU share: item embedding, input preprocessing, output scoring.

A backbone is `SequentialRecommender` plus an encoder block class; only the block differs
(as in generative-recommenders). Sequences are left-padded with item id 0 and the user state is
the output at the last position (`pooling=last`) or a recency-weighted mean of the last
`pool_k` positions (`pooling=recency_mean`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from virtualmle.models.position import PosEnc, has_absolute, positions_from_end

FFN = Literal["gelu", "relu", "swiglu", "none"]
Pooling = Literal["last", "recency_mean"]
# SASRec block wiring: standard pre-/post-LN (`norm_first`), or the published code's (see sasrec.py).
BlockLayout = Literal["standard", "pmixer", "pmixer_x"]
FFNS: tuple[str, ...] = get_args(FFN)
POOLINGS: tuple[str, ...] = get_args(Pooling)
BLOCK_LAYOUTS: tuple[str, ...] = get_args(BlockLayout)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one backbone (the model-side subset of the flat trial parameters)."""

    num_items: int  # largest item id; ids are 1..num_items, 0 is padding
    hidden: int = 64  # embedding / hidden size D
    blocks: int = 2  # encoder blocks
    heads: int = 1  # attention heads
    dropout: float = 0.2  # embedding and residual dropout
    attn_dropout: float = 0.0  # dropout on attention weights
    max_len: int = 50  # longest history; also the number of learned positions
    tied: bool = False  # score with the input item embeddings instead of a separate table
    norm_first: bool = True  # SASRec: pre-LayerNorm blocks (False: post-LayerNorm)
    linear_dim: int = 16  # HSTU per-head U/V size
    attn_dim: int = 16  # HSTU per-head Q/K size
    l2_norm: bool = False  # L2-normalise user states and item vectors before scoring
    temperature: float = 1.0  # logits are divided by it
    attn_out_dropout: bool = True  # SASRec: dropout on the attention branch's output (published code: none)
    mask_padding_keys: bool = True  # SASRec: hide padding keys (published PyTorch code: causal mask only)
    ffn: FFN = "gelu"  # SASRec feed-forward: GELU or ReLU MLP, or gated SwiGLU (HSTU has none: "none")
    ffn_mult: int = 1  # SASRec feed-forward inner size = ffn_mult * hidden
    block_layout: BlockLayout = "standard"  # SASRec: norm_first's pre/post-LN, or the published wiring
    pos_enc: PosEnc = "learned"  # order signal, see models/position.py (HSTU reference: learned+relative)
    pooling: Pooling = "last"  # user state: last position, or recency-weighted mean of the last pool_k
    pool_k: int = 3  # positions pooled by pooling=recency_mean


class Dropout(nn.Module):
    """Inverted dropout from a uniform draw.

    Same semantics as `nn.Dropout`, but on CPU `torch.rand_like(x) >= p` is several times faster
    than the Bernoulli kernel `nn.Dropout` uses (measured: 2.6 ms vs 20 ms on (256, 50, 64)),
    and dropout was a quarter of a SASRec epoch. It draws from torch's global RNG, so seeding
    keeps runs deterministic.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand_like(x) >= self.p
        return x * keep * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class EncoderBlock(nn.Module):
    """Interface of an encoder block: `prepare` builds per-batch attention inputs once."""

    @staticmethod
    def prepare(valid: torch.Tensor, timestamps: torch.Tensor | None, cfg: ModelConfig) -> Any:
        """Masks / biases shared by all blocks of one forward pass. valid: (B, T) bool."""
        raise NotImplementedError

    @staticmethod
    def final_norm(cfg: ModelConfig) -> nn.Module:
        """Module applied after the last block."""
        return nn.Identity()

    def forward(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        raise NotImplementedError


class SequentialRecommender(nn.Module):
    """Embedding -> blocks -> user states; scores items by dot product with item vectors."""

    def __init__(self, cfg: ModelConfig, block_cls: type[EncoderBlock]) -> None:
        super().__init__()
        self.cfg = cfg
        self.block_cls = block_cls
        d = cfg.hidden
        self.item_emb = nn.Embedding(cfg.num_items + 1, d, padding_idx=0)
        # index 0 = the most recent item
        self.pos_emb = nn.Embedding(cfg.max_len, d) if has_absolute(cfg.pos_enc) else None
        self.out_emb = None if cfg.tied else nn.Embedding(cfg.num_items + 1, d, padding_idx=0)
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(block_cls(cfg) for _ in range(cfg.blocks))
        self.norm = block_cls.final_norm(cfg)
        for emb in (self.item_emb, self.pos_emb, self.out_emb):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
            if self.out_emb is not None:
                self.out_emb.weight[0].zero_()

    def encode(self, items: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """User states at every position.

        Args:
            items: (B, T) left-padded item ids (0 = padding).
            timestamps: (B, T) unix seconds aligned with `items`, or None.
        Returns:
            (B, T, D) states; position t depends on items[:, :t + 1] only.
        """
        pad = self.cfg.max_len - items.size(1)
        if not self.cfg.mask_padding_keys and pad > 0:
            # Visible padding keys take part in attention, so their number must not depend on
            # how a batch happens to be padded (training batches reach ~max_len, length-sorted
            # evaluation batches do not): pad every sequence to max_len, as the published code
            # does, and return the caller's T positions.
            items = F.pad(items, (pad, 0))
            timestamps = None if timestamps is None else F.pad(timestamps, (pad, 0))
            return self._encode(items, timestamps)[:, pad:]
        return self._encode(items, timestamps)

    def _encode(self, items: torch.Tensor, timestamps: torch.Tensor | None) -> torch.Tensor:
        b, t = items.shape
        valid = items != 0  # (B, T)
        x = self.item_emb(items) * math.sqrt(self.cfg.hidden)  # (B, T, D)
        if self.pos_emb is not None:
            # Positions count back from the most recent item, so left padding never shifts them
            # (with fixed padding to max_len this is exactly SASRec's absolute position).
            pos = positions_from_end(t, items.device).clamp_(max=self.cfg.max_len - 1)
            x = x + self.pos_emb(pos)
        mask = valid.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        x = self.drop(x) * mask
        ctx = self.block_cls.prepare(valid, timestamps, self.cfg)
        for block in self.blocks:
            x = block(x, ctx) * mask
        x = self.norm(x)
        if self.cfg.pooling == "recency_mean":
            x = recency_pool(x, mask, self.cfg.pool_k)
        if self.cfg.l2_norm:
            x = F.normalize(x, dim=-1)
        return x

    def _table(self) -> nn.Embedding:
        return self.item_emb if self.out_emb is None else self.out_emb

    def output_embeddings(self) -> torch.Tensor:
        """(N + 1, D) item vectors used for scoring (row 0 is padding)."""
        w = self._table().weight
        return F.normalize(w, dim=-1) if self.cfg.l2_norm else w

    def item_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """(..., D) scoring vectors of the given item ids."""
        w = self._table()(ids)
        return F.normalize(w, dim=-1) if self.cfg.l2_norm else w

    def score_all(
        self, states: torch.Tensor, table: torch.Tensor | None = None, *, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, D) states -> (B, N + 1) logits over every item id (column 0 is padding).

        `out` is an optional (B, N + 1) buffer: evaluation reuses one, because allocating a fresh
        ~100 MB matrix per batch costs as much in page faults as the matmul itself.
        """
        table = self.output_embeddings() if table is None else table
        scaled = states / self.cfg.temperature  # scale (B, D), not (B, N + 1)
        return scaled @ table.T if out is None else torch.mm(scaled, table.T, out=out)

    def num_params(self) -> int:
        """Trainable parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def recency_pool(x: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Causal recency-weighted mean: out[t] = sum_j w_j x[t-j] / sum_j w_j, j < k, w_j = k - j.

    Applied at every position, so training on all positions supervises exactly the pooled state
    that scoring uses, and position t still depends on items[:t + 1] only. Padding positions
    (mask 0) carry no weight; a padding position's output is 0.

    Args:
        x: (B, T, D) states.
        mask: (B, T, 1) 1.0 at real items, 0.0 at padding.
        k: how many of the most recent positions to pool (k = 1 is the last position).
    """
    t = x.size(1)
    xm = x * mask  # (B, T, D)
    num = torch.zeros_like(x)  # (B, T, D)
    den = torch.zeros_like(mask)  # (B, T, 1)
    for j in range(min(k, t)):
        w = float(k - j)
        # Shift right by j along T: position t receives position t - j.
        num = num + w * F.pad(xm, (0, 0, j, 0))[:, :t]
        den = den + w * F.pad(mask, (0, 0, j, 0))[:, :t]
    return num / den.clamp_min(1e-12)
