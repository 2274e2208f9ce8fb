"""The agent's view of a search space: every searched parameter as an `Axis` of legal values,
and a `SpaceView` that snaps, validates and keys configurations.

`virtualmle.search.space.SearchSpace` describes distributions for Optuna; the agent reasons in
steps ("one grid step up"), so numeric parameters get a short ladder of round legal values
(1-3 per decade on log scales). The same view validates what an LLM proposes: unknown names,
unparseable or out-of-range values, too many changed parameters, no change at all and
duplicates are refused with a reason (`ProposalRejected`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from virtualmle.records import config_key, same_value
from virtualmle.inert import inert_params

AxisKind = Literal["int", "float", "categorical", "bool"]


class ProposalRejected(ValueError):
    """A proposed change that cannot be run. `reason` is a short machine-readable code
    (``garbage``, ``unknown_param``, ``out_of_range``, ``too_many_changes``, ``no_change``,
    ``duplicate``, ``constraint``); the message says what was wrong, for a re-ask."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Axis:
    """One searched parameter: its legal values and how to order them.

    `positions` (same length as `values`) places each value on a line for ordered axes; by
    default the value itself (its log on log axes). A parameter whose 0 means "the maximum"
    (``window``: 0 = ``max_len``) gets 0 placed at the top.
    """

    name: str
    kind: AxisKind
    values: tuple[Any, ...]
    log: bool = False
    positions: tuple[float, ...] | None = None

    @property
    def ordered(self) -> bool:
        return self.kind in ("int", "float", "bool")

    def index(self, value: Any) -> int | None:
        """Position of a legal value in `values`, None if it is not one."""
        for i, v in enumerate(self.values):
            if same_value(v, value):
                return i
        return None

    def position(self, x: Any) -> float:
        """Where a (legal or raw numeric) value lies on the axis."""
        i = self.index(x)
        if i is not None and self.positions is not None:
            return self.positions[i]
        if self.kind == "categorical":
            return float(i if i is not None else -1)
        x = float(x)
        return math.log(x) if self.log and x > 0 else x

    def _positions(self) -> list[float]:
        return list(self.positions) if self.positions is not None else [self.position(v) for v in self.values]

    def sorted_values(self) -> list[Any]:
        """Legal values from the lowest position to the highest."""
        pos = self._positions()
        return [self.values[i] for i in sorted(range(len(self.values)), key=lambda i: pos[i])]

    def parse(self, raw: Any) -> Any:
        """Turn raw input (an LLM's string, a number) into a value of the axis' type.

        Raises ProposalRejected("garbage") for anything that is not a value of this type.
        """
        if self.kind == "bool":
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in ("true", "1", "yes", "on"):
                return True
            if s in ("false", "0", "no", "off"):
                return False
            raise ProposalRejected("garbage", f"{self.name}: {str(raw)[:40]!r} is not true or false")
        if self.kind == "categorical":
            s = str(raw).strip().strip("'\"").lower()
            for v in self.values:
                if str(v).lower() == s:
                    return v
            raise ProposalRejected(
                "out_of_range", f"{self.name}: {str(raw)[:40]!r} is not one of {', '.join(map(str, self.values))}")
        if isinstance(raw, bool):
            raise ProposalRejected("garbage", f"{self.name}: expected a number, got {raw!r}")
        try:
            x = float(raw) if isinstance(raw, (int, float)) else float(str(raw).strip())
        except ValueError:
            raise ProposalRejected("garbage", f"{self.name}: {str(raw)[:40]!r} is not a number") from None
        if not math.isfinite(x):
            raise ProposalRejected("garbage", f"{self.name}: {raw!r} is not a finite number")
        return x

    def snap(self, raw: Any, *, strict: bool = True) -> Any:
        """The legal value nearest to `raw` (log distance on log axes).

        With `strict`, a value beyond either end of the axis by more than half the adjacent
        step is refused as ``out_of_range`` (snapping it would silently run something else);
        without, it is clipped to the end.
        """
        x = self.parse(raw)
        if self.kind in ("bool", "categorical"):
            return x
        i = self.index(x)
        if i is not None:
            return self.values[i]
        if self.log and x <= 0:
            if strict:
                raise ProposalRejected("out_of_range", f"{self.name}: {raw!r} must be positive")
            return self.sorted_values()[0]
        vals = [v for v in self.values if not (self.positions is None and self.log and float(v) <= 0)]
        pos = [self.position(v) for v in vals]
        p = self.position(x)
        order = sorted(range(len(pos)), key=lambda k: pos[k])
        lo, hi = pos[order[0]], pos[order[-1]]
        if strict:
            if len(pos) == 1:
                raise ProposalRejected("out_of_range", f"{self.name}: only {vals[0]!r} is allowed")
            lo_step = pos[order[1]] - lo
            hi_step = hi - pos[order[-2]]
            if p < lo - 0.5 * lo_step - 1e-12 or p > hi + 0.5 * hi_step + 1e-12:
                raise ProposalRejected(
                    "out_of_range",
                    f"{self.name}: {raw!r} is outside the space [{vals[order[0]]}, {vals[order[-1]]}]")
        best = min(range(len(pos)), key=lambda k: (abs(pos[k] - p), k))
        return vals[best]

    def step(self, value: Any, direction: str) -> Any | None:
        """The next legal value up or down from `value` (None at the end of the axis)."""
        if not self.ordered:
            return None
        vals = self.sorted_values()
        cur = value if self.index(value) is not None else self.snap(value, strict=False)
        i = next(i for i, v in enumerate(vals) if same_value(v, cur))
        j = i + (1 if direction == "up" else -1)
        return vals[j] if 0 <= j < len(vals) else None

    def rank(self, value: Any) -> int:
        """0-based rank of a value among the sorted legal values (snapped first)."""
        cur = value if self.index(value) is not None else self.snap(value, strict=False)
        return next(i for i, v in enumerate(self.sorted_values()) if same_value(v, cur))

    def neighbours(self, value: Any) -> list[Any]:
        """One step either way for ordered axes; every other value for categorical ones."""
        if self.ordered:
            return [v for v in (self.step(value, "down"), self.step(value, "up")) if v is not None]
        return [v for v in self.values if not same_value(v, value)]


@dataclass
class SpaceView:
    """The agent's view of a search space: axes, fixed values, and a constraint check.

    Attributes:
        axes: searched parameters by name, in the space's order.
        fixed: parameters the space holds constant (added to every configuration).
        check: returns None for a legal full configuration, else a one-line reason
            (constraints such as ``hidden % heads == 0``; TrainConfig validation).
    """

    axes: dict[str, Axis]
    fixed: dict[str, Any] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], str | None] | None = None

    @property
    def names(self) -> list[str]:
        return list(self.axes)

    def key(self, params: dict[str, Any]) -> str:
        """Duplicate-detection key over the searched parameters the configuration reads: two
        configurations that differ only in parameters it never reads (`training.inert`) train
        the same model, so they are one configuration."""
        inert = inert_params({**self.fixed, **params})
        return config_key(params, [n for n in self.axes if n not in inert])

    def violation(self, params: dict[str, Any]) -> str | None:
        """Why a configuration is illegal, or None."""
        for name, axis in self.axes.items():
            if name not in params or axis.index(params[name]) is None:
                return f"{name}: {params.get(name)!r} is not a value of the space"
        if self.check is not None:
            return self.check({**self.fixed, **params})
        return None

    def snap_config(self, params: dict[str, Any], *, strict: bool = False) -> dict[str, Any]:
        """Every searched parameter snapped to a legal value (unknown names ignored)."""
        return {n: a.snap(params[n], strict=strict) for n, a in self.axes.items() if n in params}

    def apply_changes(
        self,
        base: dict[str, Any],
        changes: Iterable[tuple[str, Any]],
        *,
        max_changes: int = 2,
        tried: set[str] | None = None,
    ) -> tuple[dict[str, Any], dict[str, list[Any]]]:
        """Validate `changes` (name, raw value) against `base`; return (config, changed).

        Refuses: unknown names, garbage or out-of-range values, more than `max_changes` distinct
        parameters, no actual change, a configuration that breaks a constraint, and one whose key
        is in `tried`. Nothing is coerced silently except snapping an in-range value to the grid.
        """
        changes = list(changes)
        names = [str(n) for n, _ in changes]
        unknown = [n for n in names if n not in self.axes]
        if unknown:
            raise ProposalRejected(
                "unknown_param", f"unknown parameter {unknown[0][:40]!r}; allowed: {', '.join(self.axes)}")
        if len(set(names)) > max_changes:
            raise ProposalRejected(
                "too_many_changes", f"{len(set(names))} parameters changed; at most {max_changes} allowed")
        new = dict(base)
        for name, raw in changes:
            new[name] = self.axes[name].snap(raw, strict=True)
        changed = {n: [base.get(n), new[n]] for n in self.axes if not same_value(base.get(n), new[n])}
        if not changed:
            raise ProposalRejected("no_change", "the proposal does not change the incumbent")
        why = self.violation(new)
        if why:
            raise ProposalRejected("constraint", f"illegal configuration: {why}")
        if tried is not None and self.key(new) in tried:
            raise ProposalRejected("duplicate", "this configuration was already tried")
        return new, changed


def random_config(space: SpaceView, rng: random.Random, tried: set[str] | None = None,
                  tries: int = 200) -> dict[str, Any] | None:
    """A uniformly random legal, untried configuration (OPRO's fallback), or None."""
    for _ in range(tries):
        cfg = {n: rng.choice(a.values) for n, a in space.axes.items()}
        if space.violation(cfg) is None and (tried is None or space.key(cfg) not in tried):
            return cfg
    return None


def _nice_log_ladder(low: float, high: float) -> list[float]:
    """1-2-5-free "1, 3" ladder (1e-4, 3e-4, 1e-3, ...) inside [low, high]."""
    out: list[float] = []
    e = math.floor(math.log10(low)) - 1
    while 10.0**e <= high * 1.0001:
        for m in (1.0, 3.0):
            v = float(f"{m * 10.0**e:.6g}")
            if low * 0.9999 <= v <= high * 1.0001:
                out.append(v)
        e += 1
    return out


_NICE_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)


def _axis_values(spec: Any) -> tuple[str, tuple[Any, ...], bool]:
    """(kind, legal values in order, log) of one space parameter.

    Categorical choices are all legal. Numeric parameters get their grid values and default plus
    a short ladder over [low, high] (1-3 per decade on log scales, at most about nine round
    steps on linear ones), so local moves can leave the 3-value grid without leaving the space.
    """
    t = spec.type
    if t == "bool":
        return "bool", (False, True), False
    if t == "categorical":
        choices = list(spec.choices)
        numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices)
        if numeric:  # ordered numbers (hidden sizes, batch sizes): an ordered axis
            kind = "int" if all(isinstance(c, int) for c in choices) else "float"
            vals = sorted(choices, key=float)
            log = all(v > 0 for v in vals) and len(vals) > 2 and max(vals) / min(vals) >= 8
            return kind, tuple(vals), log
        return "categorical", tuple(choices), False
    vals = set(spec.grid) | {spec.default}
    if t == "float":
        if spec.log:
            vals |= set(_nice_log_ladder(spec.low, spec.high))
        else:
            step = spec.step or next((s for s in _NICE_STEPS if (spec.high - spec.low) / s <= 9), None)
            if step:
                n = int(math.floor((spec.high - spec.low) / step + 1e-9))
                if n <= 12:
                    vals |= {float(f"{spec.low + i * step:.6g}") for i in range(n + 1)}
        vals = {float(v) for v in vals if spec.low <= v <= spec.high}
        return "float", tuple(sorted(vals)), bool(spec.log)
    if spec.log:
        vals |= {spec.high}
    else:
        n = (spec.high - spec.low) // spec.step
        k = spec.step * max(1, math.ceil(n / 6))
        vals |= set(range(spec.low, spec.high + 1, k))
    vals = {int(v) for v in vals if spec.low <= v <= spec.high}
    return "int", tuple(sorted(vals)), bool(spec.log)


# Parameters whose value 0 means "as large as possible" (TrainConfig: window 0 = max_len).
ZERO_MEANS_MAX = {"window": "max_len"}


def space_view(space: Any, *, model: str | None = None) -> SpaceView:
    """Build the agent's `SpaceView` from a `virtualmle.search.space.SearchSpace`.

    The constraint check is the space's own constraints plus `TrainConfig` validation of the
    full configuration, so the agent never proposes something the trainer would refuse.
    """
    axes: dict[str, Axis] = {}
    for name, spec in space.params.items():
        kind, values, log = _axis_values(spec)
        axes[name] = Axis(name, kind, values, log)  # type: ignore[arg-type]
    backbone = model or getattr(space, "model", None) or "sasrec"
    fixed = dict(getattr(space, "fixed", {}) or {})
    for name, top_name in ZERO_MEANS_MAX.items():
        axis = axes.get(name)
        top = fixed.get(top_name)
        if axis is None or not isinstance(top, int) or axis.index(0) is None:
            continue
        # window == max_len is the same run as window == 0: keep 0 and place it at the top
        values = tuple(v for v in axis.values if v == 0 or v < top)
        axes[name] = Axis(name, axis.kind, values, False,
                          tuple(float(top) if v == 0 else float(v) for v in values))

    def check(config: dict[str, Any]) -> str | None:
        bad = space.violations(config)
        if bad:
            return bad[0]
        try:
            from virtualmle.training.config import TrainConfig
        except ImportError:  # pragma: no cover - partial checkout
            return None
        from virtualmle.errors import ConfigError

        try:
            TrainConfig(**{**config, "model": backbone})
        except ConfigError as exc:
            return str(exc)
        return None

    return SpaceView(axes=axes, fixed=fixed, check=check)
