"""SASRec's encoder block (Kang & McAuley 2018): causal multi-head self-attention + feed-forward.

The feed-forward is D -> mD -> D with GELU (`ffn=gelu`, the release's m = 1; S3-Rec and eSASRec
use m = 4) or ReLU (`ffn=relu`, the SASRec paper and its published code), or gated SwiGLU
(`ffn=swiglu`). Positions (`pos_enc`, see `position.py`) enter here as a per-block relative
attention bias and / or rotary queries and keys.

`block_layout` picks the wiring. `standard` is a textbook pre-LN (or, with `norm_first=false`,
post-LN) block. The published SASRec code (the original TensorFlow code, pmixer/SASRec.pytorch,
CE-SCE-LLMRec) normalises only the queries and feeds the feed-forward a normalised stream:

    q = LN1(x); h = r + attn(q, keys/values = x); x = LN2(h); x = x + FFN(x)

with the attention residual r = q in pmixer/SASRec.pytorch and the TF original
(`block_layout=pmixer`) and r = x in CE-SCE-LLMRec (`block_layout=pmixer_x`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from virtualmle.models.base import Dropout, EncoderBlock, ModelConfig
from virtualmle.models.position import apply_rotary, has_relative, relative_distance, rotary_tables


@dataclass
class SASRecContext:
    """Per-forward attention inputs shared by all SASRec blocks."""

    mask: torch.Tensor  # (B, 1, T, T) bool: True where query may attend key
    distance: torch.Tensor | None  # (T, T) long query - key distance (pos_enc relative), else None
    rotary: tuple[torch.Tensor, torch.Tensor] | None  # (cos, sin), each (T, D / H), or None


class CausalSelfAttention(nn.Module):
    """Multi-head attention over earlier, non-padding positions (SDPA kernel)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.attn_dropout = cfg.attn_dropout
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        # One learned bias per distance, shared by the heads (HSTU's rab); None when off, so the
        # default model's parameters are exactly the release's.
        self.pos_bias = nn.Parameter(torch.randn(cfg.max_len) * 0.02) if has_relative(cfg.pos_enc) else None

    def forward(self, x: torch.Tensor, ctx: SASRecContext, kv: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) queries' input -> (B, T, D); keys and values come from `kv` (default: `x`)."""
        b, t, d = x.shape
        if kv is None:
            q, k, v = self.qkv(x).split(d, dim=-1)  # 3 x (B, T, D)
        else:
            # The published layout: queries from the normalised stream, keys and values from the
            # raw one. Same weights as the fused path, so the layouts differ only in wiring.
            w, bias = self.qkv.weight, self.qkv.bias
            q = F.linear(x, w[:d], bias[:d])  # (B, T, D)
            k, v = F.linear(kv, w[d:], bias[d:]).split(d, dim=-1)  # 2 x (B, T, D)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        if ctx.rotary is not None:
            q, k = apply_rotary(q, *ctx.rotary), apply_rotary(k, *ctx.rotary)  # (B, H, T, D / H)
        mask: torch.Tensor = ctx.mask
        if self.pos_bias is not None and ctx.distance is not None:
            # Additive float mask: the bias where attention is allowed, -inf elsewhere.
            mask = self.pos_bias[ctx.distance].masked_fill(~ctx.mask, float("-inf"))  # (B, 1, T, T)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0
        )  # (B, H, T, D / H)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


class FeedForward(nn.Module):
    """Position-wise D -> mD -> D with GELU or ReLU (the release keeps GELU, m = 1: D -> D -> D)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        inner = cfg.ffn_mult * cfg.hidden
        self.fc = nn.Linear(cfg.hidden, inner)
        self.proj = nn.Linear(inner, cfg.hidden)
        self.drop = Dropout(cfg.dropout)
        self.act = _ACTIVATIONS[cfg.ffn]
        self.act_name = cfg.ffn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Dropout after the activation equals the published code's dropout before ReLU (both
        # scale by a non-negative mask), so one order serves both activations.
        return self.proj(self.drop(self.act(self.fc(x))))  # (B, T, D)

    def extra_repr(self) -> str:
        return f"act={self.act_name}"


class SwiGLUFeedForward(nn.Module):
    """Gated D -> mD -> D: proj(SiLU(x W_gate) * x W_value) (Shazeer 2020).

    One fused input matrix for gate and value; 1.5x the parameters of the GELU MLP of the same
    inner size (kept equal rather than shrunk by 2/3, so `ffn_mult` means the same for both).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        inner = cfg.ffn_mult * cfg.hidden
        self.fc = nn.Linear(cfg.hidden, 2 * inner)
        self.proj = nn.Linear(inner, cfg.hidden)
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc(x).chunk(2, dim=-1)  # 2 x (B, T, mD)
        return self.proj(self.drop(F.silu(gate) * value))  # (B, T, D)


FEED_FORWARDS: dict[str, type[nn.Module]] = {"gelu": FeedForward, "relu": FeedForward, "swiglu": SwiGLUFeedForward}


class SASRecBlock(EncoderBlock):
    """Pre-LN (x + f(LN(x))), post-LN (LN(x + f(x))) or the published SASRec wiring (module doc)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm_first = cfg.norm_first
        self.layout = cfg.block_layout
        self.ln1 = nn.LayerNorm(cfg.hidden)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.hidden)
        self.ffn = FEED_FORWARDS[cfg.ffn](cfg)
        self.drop = Dropout(cfg.dropout)
        self.attn_drop = self.drop if cfg.attn_out_dropout else nn.Identity()

    @staticmethod
    def prepare(valid: torch.Tensor, timestamps: torch.Tensor | None, cfg: ModelConfig) -> SASRecContext:
        """Causal mask with padding keys hidden, plus the position inputs `pos_enc` asks for.

        Every position may also see itself, so padding rows are never all-masked (which would
        give NaN); real positions never see padding because padding is always on the left.
        """
        t, dev = valid.size(1), valid.device
        causal = torch.ones(t, t, dtype=torch.bool, device=dev).tril_()
        if cfg.mask_padding_keys:
            eye = torch.eye(t, dtype=torch.bool, device=dev)
            mask = (causal & (valid[:, None, :] | eye)).unsqueeze(1)  # (B, 1, T, T)
        else:  # padding keys stay visible: an attention sink
            mask = causal.expand(valid.size(0), 1, t, t)
        distance = relative_distance(t, cfg.max_len, dev) if has_relative(cfg.pos_enc) else None
        rotary = rotary_tables(t, cfg.hidden // cfg.heads, dev) if cfg.pos_enc == "rotary" else None
        return SASRecContext(mask=mask, distance=distance, rotary=rotary)

    @staticmethod
    def final_norm(cfg: ModelConfig) -> nn.Module:
        # Pre-LN and the published layouts leave the residual stream unnormalised; post-LN blocks
        # already end in a norm.
        return nn.LayerNorm(cfg.hidden) if cfg.norm_first or cfg.block_layout != "standard" else nn.Identity()

    def forward(self, x: torch.Tensor, ctx: SASRecContext) -> torch.Tensor:
        if self.layout != "standard":
            q = self.ln1(x)  # (B, T, D): only the queries are normalised
            h = (q if self.layout == "pmixer" else x) + self.attn_drop(self.attn(q, ctx, kv=x))
            h = self.ln2(h)  # the feed-forward's input and its residual are normalised
            return h + self.drop(self.ffn(h))  # padding rows are zeroed by the caller (timeline mask)
        if self.norm_first:
            x = x + self.attn_drop(self.attn(self.ln1(x), ctx))
            return x + self.drop(self.ffn(self.ln2(x)))
        x = self.ln1(x + self.attn_drop(self.attn(x, ctx)))
        return self.ln2(x + self.drop(self.ffn(x)))
