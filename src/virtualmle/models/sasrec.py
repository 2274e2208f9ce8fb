"""SASRec's encoder block (Kang & McAuley 2018): causal multi-head self-attention + GELU FFN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from virtualmle.models.base import Dropout, EncoderBlock, ModelConfig


class CausalSelfAttention(nn.Module):
    """Multi-head attention over earlier, non-padding positions (SDPA kernel)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.attn_dropout = cfg.attn_dropout
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)  # 3 x (B, T, D)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0
        )  # (B, H, T, D / H)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    """Position-wise D -> D -> D with GELU (SASRec keeps the inner size equal to D)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.hidden, cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.drop(F.gelu(self.fc(x))))


class SASRecBlock(EncoderBlock):
    """Pre-LN (x + f(LN(x))) or post-LN (LN(x + f(x))) transformer block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm_first = cfg.norm_first
        self.ln1 = nn.LayerNorm(cfg.hidden)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.hidden)
        self.ffn = FeedForward(cfg)
        self.drop = Dropout(cfg.dropout)
        self.attn_drop = self.drop if cfg.attn_out_dropout else nn.Identity()

    @staticmethod
    def prepare(valid: torch.Tensor, timestamps: torch.Tensor | None, cfg: ModelConfig) -> torch.Tensor:
        """(B, 1, T, T) boolean mask: causal, padding keys hidden.

        Every position may also see itself, so padding rows are never all-masked (which would
        give NaN); real positions never see padding because padding is always on the left.
        """
        t = valid.size(1)
        causal = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril_()
        if not cfg.mask_padding_keys:  # padding keys stay visible: an attention sink
            return causal.expand(valid.size(0), 1, t, t)
        eye = torch.eye(t, dtype=torch.bool, device=valid.device)
        return (causal & (valid[:, None, :] | eye)).unsqueeze(1)

    @staticmethod
    def final_norm(cfg: ModelConfig) -> nn.Module:
        # Pre-LN leaves the residual stream unnormalised; post-LN blocks already end in a norm.
        return nn.LayerNorm(cfg.hidden) if cfg.norm_first else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.attn_drop(self.attn(self.ln1(x), mask))
            return x + self.drop(self.ffn(self.ln2(x)))
        x = self.ln1(x + self.attn_drop(self.attn(x, mask)))
        return self.ln2(x + self.drop(self.ffn(x)))
