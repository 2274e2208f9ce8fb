"""HSTU's encoder block (Zhai et al. 2024): pointwise SiLU attention with relative biases.

LayerNorm -> one linear to U, V, Q, K with SiLU -> SiLU(QK^T + rab) / n, causal and padding
masked, no softmax -> U * LayerNorm(attn V) -> linear, residual. `rab` is a learned bias per
relative position (distance, clamped to max_len - 1) plus, when timestamps exist, a learned bias
per log-bucketed time gap. `n` is max_len, the padded length of the reference implementation,
so the output does not depend on how much left padding a batch carries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from virtualmle.models.base import Dropout, EncoderBlock, ModelConfig

TIME_BUCKETS = 128  # log-scale buckets of the time gap, as in generative-recommenders
TIME_LOG_BASE = 0.301  # bucket = ln(gap seconds) / 0.301


@dataclass
class HSTUContext:
    """Per-forward attention inputs shared by all HSTU blocks."""

    mask: torch.Tensor  # (B, 1, T, T) float: 1 where query may attend key
    distance: torch.Tensor  # (T, T) long: query position - key position, clamped to [0, max_len)
    time_bucket: torch.Tensor | None  # (B, T, T) long, or None without timestamps
    n: float  # attention normaliser


class HSTUBlock(EncoderBlock):
    """One HSTU layer."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        h, dl, da = cfg.heads, cfg.linear_dim, cfg.attn_dim
        self.heads, self.linear_dim, self.attn_dim = h, dl, da
        self.norm_in = nn.LayerNorm(cfg.hidden)
        self.uvqk = nn.Linear(cfg.hidden, h * (2 * dl + 2 * da))
        self.norm_attn = nn.LayerNorm(h * dl)
        self.out = nn.Linear(h * dl, cfg.hidden)
        self.pos_bias = nn.Parameter(torch.zeros(cfg.max_len))
        self.time_bias = nn.Parameter(torch.zeros(TIME_BUCKETS + 1))
        nn.init.normal_(self.pos_bias, std=0.02)
        nn.init.normal_(self.time_bias, std=0.02)
        self.drop = Dropout(cfg.dropout)
        self.attn_drop = Dropout(cfg.attn_dropout)

    @staticmethod
    def prepare(valid: torch.Tensor, timestamps: torch.Tensor | None, cfg: ModelConfig) -> HSTUContext:
        t = valid.size(1)
        idx = torch.arange(t, device=valid.device)
        distance = (idx[:, None] - idx[None, :]).clamp(0, cfg.max_len - 1)  # (T, T)
        causal = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril_()
        mask = (causal & valid[:, None, :] & valid[:, :, None]).unsqueeze(1).float()
        bucket = None
        if timestamps is not None:
            gap = (timestamps[:, :, None] - timestamps[:, None, :]).abs().clamp(min=1)  # (B, T, T)
            bucket = (torch.log(gap.float()) / TIME_LOG_BASE).long().clamp(0, TIME_BUCKETS)
        return HSTUContext(mask=mask, distance=distance, time_bucket=bucket, n=float(cfg.max_len))

    def forward(self, x: torch.Tensor, ctx: HSTUContext) -> torch.Tensor:
        b, t, _ = x.shape
        h, dl, da = self.heads, self.linear_dim, self.attn_dim
        u, v, q, k = F.silu(self.uvqk(self.norm_in(x))).split([h * dl, h * dl, h * da, h * da], -1)
        q = q.view(b, t, h, da).transpose(1, 2)  # (B, H, T, da)
        k = k.view(b, t, h, da).transpose(1, 2)  # (B, H, T, da)
        v = v.view(b, t, h, dl).transpose(1, 2)  # (B, H, T, dl)
        bias = self.pos_bias[ctx.distance]  # (T, T)
        if ctx.time_bucket is not None:
            bias = bias + self.time_bias[ctx.time_bucket].unsqueeze(1)  # (B, 1, T, T)
        attn = F.silu(q @ k.transpose(-1, -2) + bias) / ctx.n * ctx.mask  # (B, H, T, T)
        y = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(b, t, h * dl)  # (B, T, H*dl)
        return x + self.out(self.drop(u * self.norm_attn(y)))
