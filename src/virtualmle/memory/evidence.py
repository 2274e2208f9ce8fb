"""Evidence for a move, pooled over every trial of a study that bears on it.

A trial is compared with the configuration it changed (its parent). What that comparison is
evidence about depends on how many parameters it changed:

- exactly one: evidence about that parameter's move (``raise lr``);
- several: evidence about that *combination* of moves only. It never becomes single-parameter
  credit (a win from changing dropout and lr together says nothing about either alone).

A move's effect is the mean of its paired deltas, its uncertainty the standard error of that
mean: a paired delta carries the noise of two runs (``sqrt(2) x noise``), and with three or more
pairs their own spread counts when it is larger. A move is *established* when its mean is at
least `Z_MIN` standard errors from zero; anything less is within noise and never becomes a rule.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from virtualmle.memory.rules import NON_TRANSFERABLE, Action

# Standard errors a mean delta must clear to count as an effect rather than noise.
Z_MIN = 2.0


def _numeric(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def move_of(param: str, old: Any, new: Any) -> Action | None:
    """The move from `old` to `new`: a direction for numbers, the new value otherwise."""
    if new == old or old is None or new is None:
        return None
    if _numeric(old) and _numeric(new):
        return Action(param=param, direction="up" if new > old else "down")
    return Action(param=param, value=new)


def fmt_value(v: Any) -> str:
    """A parameter value as people write it (3e-4, 0.2, 64, 'adam')."""
    if isinstance(v, float):
        return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e") if 0 < abs(v) < 1e-2 else f"{v:.4g}"
    return str(v)


@dataclass(frozen=True)
class Pair:
    """One trial against its parent: the moves it made and the signed metric change."""

    trial: int
    moves: tuple[Action, ...]
    changes: tuple[tuple[str, Any, Any], ...]  # (param, old, new) per move, same order
    delta: float | None  # signed so that > 0 is better; None for a failed trial
    parent_value: float
    noise: float  # one run's standard deviation of the metric near the parent's value

    @property
    def failed(self) -> bool:
        return self.delta is None


@dataclass
class MoveEvidence:
    """All pairs that made one move (or one combination of moves)."""

    moves: tuple[Action, ...]
    pairs: list[Pair] = field(default_factory=list)

    @property
    def deltas(self) -> list[float]:
        return [p.delta for p in self.pairs if p.delta is not None]

    @property
    def failures(self) -> int:
        return sum(1 for p in self.pairs if p.failed)

    @property
    def n(self) -> int:
        """Trials behind it (completed and failed)."""
        return len(self.pairs)

    @property
    def mean(self) -> float | None:
        d = self.deltas
        return statistics.fmean(d) if d else None

    @property
    def relative(self) -> float | None:
        """Mean of the deltas relative to each parent's value."""
        r = [p.delta / abs(p.parent_value) for p in self.pairs if p.delta is not None and p.parent_value]
        return statistics.fmean(r) if r else None

    @property
    def se(self) -> float | None:
        """Standard error of `mean`: two runs' noise per pair, or the pairs' spread if larger."""
        d = [p for p in self.pairs if p.delta is not None]
        if not d:
            return None
        noise = math.sqrt(statistics.fmean([2.0 * p.noise ** 2 for p in d]))
        spread = statistics.stdev([p.delta for p in d]) if len(d) >= 3 else 0.0  # type: ignore[misc]
        return max(noise, spread) / math.sqrt(len(d))

    @property
    def z(self) -> float | None:
        """Mean over its standard error (the "x noise" people read)."""
        m, s = self.mean, self.se
        if m is None or s is None:
            return None
        return m / s if s > 0 else math.copysign(math.inf, m) if m else 0.0

    @property
    def established(self) -> bool:
        """An effect beyond noise (|z| >= Z_MIN), or a move that only ever failed."""
        if not self.deltas:
            return self.failures > 0
        return abs(self.z or 0.0) >= Z_MIN

    @property
    def helped(self) -> bool:
        """The move's pooled effect is positive and it never failed."""
        return self.failures == 0 and (self.mean or 0.0) > 0

    def agreeing(self) -> int:
        """Pairs whose own sign agrees with the pooled direction (failures agree with "avoid")."""
        good = self.helped
        return sum(1 for p in self.pairs if (p.delta is not None and (p.delta > 0) == good) or (p.failed and not good))

    def describe(self, last: Pair | None = None) -> str:
        """Code facts in one line, e.g. ``lr 3e-4 -> 1e-3: +0.0082 (14x noise), 1 trial``."""
        last = last or self.pairs[-1]
        change = " with ".join(f"{p} {fmt_value(a)} -> {fmt_value(b)}" for p, a, b in last.changes)
        parts = []
        if self.mean is not None:
            z = self.z or 0.0
            noise = "inf" if math.isinf(z) else f"{abs(z):.0f}"
            rel = f", {self.relative:+.0%}" if self.relative is not None else ""
            parts.append(f"{self.mean:+.4f}{rel} ({noise}x noise)")
        if self.failures:
            parts.append(f"{self.failures} failed")
        n = len(self.deltas) + self.failures
        mean_word = "mean over " if len(self.deltas) > 1 else ""
        return f"{change}: {', '.join(parts)}, {mean_word}{n} trial{'s' if n != 1 else ''}"


def key_of(moves: tuple[Action, ...]) -> tuple:
    """Identity of a move or combination, independent of order."""
    return tuple(sorted(m.key() for m in moves))


@dataclass
class StudyEvidence:
    """Per move and per combination of moves, every pair of the study that made it."""

    single: dict[tuple, MoveEvidence] = field(default_factory=dict)
    combos: dict[tuple, MoveEvidence] = field(default_factory=dict)
    pairs: list[Pair] = field(default_factory=list)

    def of(self, pair: Pair) -> MoveEvidence:
        """The evidence (single move or combination) that `pair` belongs to."""
        book = self.single if len(pair.moves) == 1 else self.combos
        return book[key_of(pair.moves)]

    def params(self) -> dict[str, int]:
        """Per parameter, the trials that changed it alone (its single-move evidence count)."""
        out: dict[str, int] = {}
        for ev in self.single.values():
            out[ev.moves[0].param] = out.get(ev.moves[0].param, 0) + ev.n
        return out


def study_evidence(trials: list[Any], *, direction: str = "maximize", noise: float,
                   skip: frozenset[str] = NON_TRANSFERABLE) -> StudyEvidence:
    """Pool the study's trials (`TrialEntry`-like: number, params, value, ok, failed, parent,
    changed, diagnostics) into per-move and per-combination evidence.

    Args:
        noise: one run's standard deviation of the metric, used for a pair whose trial has no
            stored ``diagnostics["noise"]``.
    """
    by_num = {t.number: t for t in trials}
    sign = 1.0 if direction == "maximize" else -1.0
    out = StudyEvidence()
    for t in sorted(trials, key=lambda t: t.number):
        parent = by_num.get(t.parent) if t.parent is not None else None
        if parent is None or not parent.ok or not (t.ok or t.failed):
            continue
        changes = []
        for p in sorted(t.changed):
            if p in skip:
                continue
            mv = move_of(p, parent.params.get(p), t.params.get(p))
            if mv is not None:
                changes.append((p, parent.params.get(p), t.params.get(p), mv))
        if not changes:
            continue
        stored = (getattr(t, "diagnostics", None) or {}).get("noise")
        pn = float(stored) if _numeric(stored) and stored > 0 else noise
        pair = Pair(trial=t.number, moves=tuple(c[3] for c in changes), changes=tuple(c[:3] for c in changes),
                    delta=sign * (t.value - parent.value) if t.ok else None, parent_value=parent.value, noise=pn)
        book = out.single if len(changes) == 1 else out.combos
        book.setdefault(key_of(pair.moves), MoveEvidence(moves=pair.moves)).pairs.append(pair)
        out.pairs.append(pair)
    return out


__all__ = ["Z_MIN", "MoveEvidence", "Pair", "StudyEvidence", "fmt_value", "key_of", "move_of", "study_evidence"]
