"""How a backbone knows item order: learned absolute positions, relative bias, rotary, none.

`pos_enc` names which of three mechanisms are on:

- `learned`: a learned embedding per position added to the input (SASRec's default);
- `relative`: a learned attention bias per query-key distance, one per block, shared by the
  heads (HSTU's `rab`);
- `rotary`: rotary embeddings on the queries and keys of every block (RoFormer);
- `learned+relative`: both of the first two (HSTU's default, as in generative-recommenders);
- `none`: no position signal beyond the causal mask.

Every position is counted back from the most recent item (index 0 = the last item), so left
padding never moves a real item's position and outputs do not depend on a batch's padding.
HSTU's time-gap bias is not a position encoding: it stays on whenever the data has timestamps.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from virtualmle.errors import ConfigError

PosEnc = Literal["learned", "none", "relative", "rotary", "learned+relative"]
POS_ENCODINGS: tuple[str, ...] = get_args(PosEnc)
ROTARY_BASE = 10_000.0  # RoFormer's base frequency


def has_absolute(pos_enc: str) -> bool:
    """True when a learned absolute position embedding is added to the input."""
    return pos_enc in ("learned", "learned+relative")


def has_relative(pos_enc: str) -> bool:
    """True when each block adds a learned bias per query-key distance to its attention."""
    return pos_enc in ("relative", "learned+relative")


def positions_from_end(t: int, device: torch.device) -> torch.Tensor:
    """(T,) long: T-1, ..., 1, 0 (0 is the most recent position)."""
    return torch.arange(t - 1, -1, -1, device=device)


def relative_distance(t: int, max_len: int, device: torch.device) -> torch.Tensor:
    """(T, T) long: query position - key position, clamped to [0, max_len) (future keys: 0)."""
    idx = torch.arange(t, device=device)
    return (idx[:, None] - idx[None, :]).clamp(0, max_len - 1)


def rotary_tables(t: int, dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (T, dim), for rotating head vectors of size `dim` (even).

    Angles use the position counted from the end, so left padding does not change them; the
    attention score of two positions depends only on their distance either way.
    """
    if dim % 2:
        raise ConfigError(f"pos_enc=rotary needs an even per-head size, got {dim}")
    inv_freq = ROTARY_BASE ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)  # (dim/2,)
    angles = positions_from_end(t, device).float()[:, None] * inv_freq[None, :]  # (T, dim/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, dim)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (..., T, dim) head vectors by the (T, dim) tables of `rotary_tables`."""
    half = x.size(-1) // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)  # (..., T, dim)
    return x * cos + rotated * sin
