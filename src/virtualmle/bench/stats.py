"""Summary statistics of a bench: mean, standard error and median over runs (None when empty)."""

from __future__ import annotations

import math


def mean(xs: list[float]) -> float | None:
    """The mean, None for no values."""
    return sum(xs) / len(xs) if xs else None


def se(xs: list[float]) -> float | None:
    """The standard error of the mean (0 for one value, None for none)."""
    if len(xs) < 2:
        return 0.0 if xs else None
    m = sum(xs) / len(xs)
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return math.sqrt(var / len(xs))


def median(xs: list[float]) -> float | None:
    """The median, None for no values."""
    if not xs:
        return None
    s = sorted(xs)
    k = len(s) // 2
    return float(s[k]) if len(s) % 2 else (s[k - 1] + s[k]) / 2
