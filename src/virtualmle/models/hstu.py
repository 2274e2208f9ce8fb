"""HSTU's encoder block (Zhai et al. 2024): pointwise SiLU attention with relative biases.

LayerNorm -> one linear to U, V, Q, K with SiLU -> SiLU(QK^T + rab) / n, causal and padding
masked, no softmax -> U * LayerNorm(attn V) -> linear, residual. `rab` is a learned bias per
relative position (distance, clamped to max_len - 1) plus, when timestamps exist, a learned bias
per log-bucketed time gap. `n` is max_len, the padded length of the reference implementation,
so the output does not depend on how much left padding a batch carries.

`pos_enc` (see `position.py`) switches the relative bias (`relative`, `learned+relative`, the
default) and rotary queries / keys (`rotary`); the time-gap bias stays whenever there are
timestamps. HSTU has no feed-forward: the U gate plays its part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from virtualmle.models.base import Dropout, EncoderBlock, ModelConfig
from virtualmle.models.position import apply_rotary, has_relative, relative_distance, rotary_tables

TIME_BUCKETS = 128  # log-scale buckets of the time gap, as in generative-recommenders
TIME_LOG_BASE = 0.301  # bucket = ln(gap seconds) / 0.301


@dataclass
class HSTUContext:
    """Per-forward attention inputs shared by all HSTU blocks."""

    mask: torch.Tensor  # (B, 1, T, T) float: 1 where query may attend key
    distance: torch.Tensor  # (T, T) long: query position - key position, clamped to [0, max_len)
    time_bucket: torch.Tensor | None  # (B, T, T) long, or None without timestamps
    n: float  # attention normaliser
    rotary: tuple[torch.Tensor, torch.Tensor] | None = None  # (cos, sin), each (T, attn_dim)


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
        # None when pos_enc has no relative part: no unused parameter in the state dict.
        self.pos_bias = nn.Parameter(torch.zeros(cfg.max_len)) if has_relative(cfg.pos_enc) else None
        self.time_bias = nn.Parameter(torch.zeros(TIME_BUCKETS + 1))
        if self.pos_bias is not None:
            nn.init.normal_(self.pos_bias, std=0.02)
        nn.init.normal_(self.time_bias, std=0.02)
        self.drop = Dropout(cfg.dropout)
        self.attn_drop = Dropout(cfg.attn_dropout)

    @staticmethod
    def prepare(valid: torch.Tensor, timestamps: torch.Tensor | None, cfg: ModelConfig) -> HSTUContext:
        t = valid.size(1)
        distance = relative_distance(t, cfg.max_len, valid.device)  # (T, T)
        causal = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril_()
        mask = (causal & valid[:, None, :] & valid[:, :, None]).unsqueeze(1).float()
        bucket = None
        if timestamps is not None:
            gap = (timestamps[:, :, None] - timestamps[:, None, :]).abs().clamp(min=1)  # (B, T, T)
            bucket = (torch.log(gap.float()) / TIME_LOG_BASE).long().clamp(0, TIME_BUCKETS)
        rotary = rotary_tables(t, cfg.attn_dim, valid.device) if cfg.pos_enc == "rotary" else None
        return HSTUContext(mask=mask, distance=distance, time_bucket=bucket, n=float(cfg.max_len), rotary=rotary)

    def forward(self, x: torch.Tensor, ctx: HSTUContext) -> torch.Tensor:
        b, t, _ = x.shape
        h, dl, da = self.heads, self.linear_dim, self.attn_dim
        u, v, q, k = F.silu(self.uvqk(self.norm_in(x))).split([h * dl, h * dl, h * da, h * da], -1)
        q = q.view(b, t, h, da).transpose(1, 2)  # (B, H, T, da)
        k = k.view(b, t, h, da).transpose(1, 2)  # (B, H, T, da)
        v = v.view(b, t, h, dl).transpose(1, 2)  # (B, H, T, dl)
        if ctx.rotary is not None:
            q, k = apply_rotary(q, *ctx.rotary), apply_rotary(k, *ctx.rotary)
        # Biases are summed before they meet QK^T: the release's order of additions, so the
        # default model's numbers are bit-for-bit the same.
        bias = self.pos_bias[ctx.distance] if self.pos_bias is not None else None  # (T, T)
        if ctx.time_bucket is not None:
            time_bias = self.time_bias[ctx.time_bucket].unsqueeze(1)  # (B, 1, T, T)
            bias = time_bias if bias is None else bias + time_bias
        logits = q @ k.transpose(-1, -2)  # (B, H, T, T)
        attn = F.silu(logits if bias is None else logits + bias) / ctx.n * ctx.mask  # (B, H, T, T)
        y = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(b, t, h * dl)  # (B, T, H*dl)
        return x + self.out(self.drop(u * self.norm_attn(y)))
