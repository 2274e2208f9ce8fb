"""Candidate changes, generated in code, checked against the search space.

A candidate is one or two parameter changes relative to the incumbent. They come from:

- ``neighbour``: one grid step up or down (or another category) of one parameter;
- ``diagnostic``: moves the last trial's diagnostics call for (overfitting -> more dropout /
  weight decay / a smaller model; underfitting -> a higher learning rate / a bigger model / more
  epochs; divergence -> a lower learning rate; out of memory -> a smaller batch or model);
- ``momentum``: the move that produced the current incumbent, one step further;
- ``combine``: a move that helped (or looked promising) from an older incumbent, replayed on the
  current one;
- ``transfer`` / ``memory``: rules whose condition matches the dataset profile (a rule with
  ``avoid`` instead penalises the candidates making that move);
- ``coverage``: parameters never varied in the study.

Every value is snapped to the space's legal values, configurations that break a constraint or
were already tried are dropped, and after K trials on the same parameters without improvement
(plateau) only candidates touching another parameter survive (forced diversity).

The same `SpaceView` validates what an LLM proposes: unknown names, unparseable or out-of-range
values, too many changed parameters, no change at all and duplicates are refused with a reason.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from virtualmle.agent.diagnostics import Diagnostics, Observation, config_key

AxisKind = Literal["int", "float", "categorical", "bool"]

# Prior bonus (in units of the surrogate's standardised score) by where a candidate came from.
# Diagnostics and matched rules are evidence; plain neighbours are not.
SOURCE_PRIOR: dict[str, float] = {
    "transfer": 0.8,  # multiplied by the rule's confidence
    "memory": 0.6,  # same-dataset insight; multiplied by confidence
    "diagnostic": 0.5,
    "momentum": 0.4,
    "combine": 0.4,
    "coverage": 0.2,
    "neighbour": 0.0,
    "llm": 0.0,
}
AVOID_PENALTY = 0.8  # times the rule's confidence, for a candidate making an `avoid` move

# Which moves a diagnosis calls for: (parameter, direction) in order of preference.
OVERFIT_MOVES: tuple[tuple[str, str], ...] = (
    ("dropout", "up"), ("weight_decay", "up"), ("attn_dropout", "up"), ("hidden", "down"),
    ("blocks", "down"), ("lr", "down"),
)
UNDERFIT_MOVES: tuple[tuple[str, str], ...] = (
    ("lr", "up"), ("max_epochs", "up"), ("hidden", "up"), ("dropout", "down"), ("blocks", "up"),
    ("batch_size", "down"),
)
DIVERGED_MOVES: tuple[tuple[str, str], ...] = (("lr", "down"), ("grad_clip", "down"), ("temperature", "up"))
OOM_MOVES: tuple[tuple[str, str], ...] = (("batch_size", "down"), ("hidden", "down"), ("max_len", "down"),
                                          ("negatives", "down"))
# Two-parameter moves worth trying together (both must point the same way as the diagnosis).
OVERFIT_PAIRS: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = (
    (("dropout", "up"), ("weight_decay", "up")),
    (("dropout", "up"), ("hidden", "down")),
)
UNDERFIT_PAIRS: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = (
    (("lr", "up"), ("dropout", "down")),
    (("lr", "up"), ("hidden", "up")),
)


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
            if _same(v, value):
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
        i = next(i for i, v in enumerate(vals) if _same(v, cur))
        j = i + (1 if direction == "up" else -1)
        return vals[j] if 0 <= j < len(vals) else None

    def rank(self, value: Any) -> int:
        """0-based rank of a value among the sorted legal values (snapped first)."""
        cur = value if self.index(value) is not None else self.snap(value, strict=False)
        return next(i for i, v in enumerate(self.sorted_values()) if _same(v, cur))

    def neighbours(self, value: Any) -> list[Any]:
        """One step either way for ordered axes; every other value for categorical ones."""
        if self.ordered:
            return [v for v in (self.step(value, "down"), self.step(value, "up")) if v is not None]
        return [v for v in self.values if not _same(v, value)]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


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
        """Duplicate-detection key over the searched parameters only."""
        return config_key({k: params.get(k) for k in self.axes})

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
        changed = {n: [base.get(n), new[n]] for n in self.axes if not _same(base.get(n), new[n])}
        if not changed:
            raise ProposalRejected("no_change", "the proposal does not change the incumbent")
        why = self.violation(new)
        if why:
            raise ProposalRejected("constraint", f"illegal configuration: {why}")
        if tried is not None and self.key(new) in tried:
            raise ProposalRejected("duplicate", "this configuration was already tried")
        return new, changed


@dataclass
class Candidate:
    """A configuration to consider, with where it came from and why."""

    config: dict[str, Any]
    changed: dict[str, list[Any]]  # name -> [old, new]
    source: str
    reason: str
    prior: float = 0.0
    sources: list[str] = field(default_factory=list)
    score: float | None = None  # filled by the ranking
    mu: float | None = None
    sigma: float | None = None

    def describe(self, max_changes: int | None = None) -> str:
        """`lr 0.0003 -> 0.001, dropout 0.2 -> 0.3`; with `max_changes`, the rest as `(+k more)`."""
        items = list(self.changed.items())
        shown = items if max_changes is None else items[:max_changes]
        text = ", ".join(f"{k} {_fmt(a)} -> {_fmt(b)}" for k, (a, b) in shown)
        return text + (f" (+{len(items) - len(shown)} more)" if len(shown) < len(items) else "")

    def to_dict(self) -> dict[str, Any]:
        return {"changes": {k: v for k, v in self.changed.items()}, "source": self.source,
                "sources": self.sources or [self.source], "reason": self.reason,
                "prior": round(self.prior, 4), "score": None if self.score is None else round(self.score, 4)}


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@dataclass
class RuleHint:
    """A machine-actionable rule for candidate generation: move `param` up / down or to `value`.

    `source` is ``transfer`` (from another dataset's cognition summary) or ``memory`` (this
    dataset's long-term insights); `avoid` turns it into a penalty.
    """

    param: str
    direction: str | None = None
    value: Any = None
    avoid: bool = False
    confidence: float = 0.5
    source: str = "transfer"
    text: str = ""


@dataclass
class CandidateSet:
    """The generated candidates and the plateau / coverage state that shaped them."""

    candidates: list[Candidate]
    plateau: bool = False
    stale_params: list[str] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)


def coverage(history: list[Observation], space: SpaceView) -> dict[str, list[Any]]:
    """Per parameter, the distinct values tried so far (in the order first tried)."""
    out: dict[str, list[Any]] = {n: [] for n in space.axes}
    for o in history:
        for n in space.axes:
            v = o.params.get(n)
            if v is not None and not any(_same(v, w) for w in out[n]):
                out[n].append(v)
    return out


def plateau_state(history: list[Observation], k: int) -> tuple[bool, list[str]]:
    """(plateau, stale parameters): the last `k` trials since the incumbent all failed to improve
    and together changed only these parameters. Trials are in completion order; `changed` is
    relative to the incumbent each one started from."""
    if k <= 0:
        return False, []
    best = -math.inf
    since: list[Observation] = []
    for o in history:
        if o.ok and o.value > best:  # type: ignore[operator]
            best = float(o.value)  # type: ignore[arg-type]
            since = []
        elif o.base is not None:
            since.append(o)
    if len(since) < k:
        return False, []
    stale = sorted({p for o in since[-k:] for p in o.changed})
    return bool(stale), stale


def _move_value(axis: Axis, current: Any, direction: str | None, value: Any) -> Any | None:
    if direction is not None:
        return axis.step(current, direction)
    try:
        return axis.snap(value, strict=True)
    except ProposalRejected:
        return None


def _direction_of(axis: Axis, old: Any, new: Any) -> str | None:
    if not axis.ordered:
        return None
    return "up" if axis.position(new) > axis.position(old) else "down"


def generate_candidates(
    space: SpaceView,
    incumbent: Observation,
    history: list[Observation],
    *,
    last: Diagnostics | None = None,
    hints: list[RuleHint] | None = None,
    pending: list[dict[str, Any]] | None = None,
    plateau_k: int = 3,
    max_changes: int = 2,
    min_pool: int = 0,
) -> CandidateSet:
    """All candidate changes of the incumbent, merged by configuration, illegal and tried ones
    removed, with a prior bonus per source (see `SOURCE_PRIOR`). When fewer than `min_pool`
    remain, pairs of neighbour moves are added (a wider step)."""
    base = {n: incumbent.params.get(n) for n in space.axes}
    tried = {space.key(o.params) for o in history} | {space.key(p) for p in pending or []}
    pool: dict[str, Candidate] = {}

    def add(moves: list[tuple[str, Any]], source: str, reason: str, prior: float) -> None:
        moves = [(n, v) for n, v in moves if n in space.axes and v is not None]
        if not moves or len({n for n, _ in moves}) > max_changes:
            return
        try:
            cfg, changed = space.apply_changes(base, moves, max_changes=max_changes, tried=tried)
        except ProposalRejected:
            return
        key = space.key(cfg)
        cand = pool.get(key)
        if cand is None:
            pool[key] = Candidate(cfg, changed, source, reason, prior, [source])
        else:  # the same configuration from several sources: evidence adds up, capped
            if source not in cand.sources:
                cand.sources.append(source)
                cand.prior = min(1.5, cand.prior + max(prior, 0.0) * 0.5) if prior >= 0 else cand.prior + prior
                if prior > 0 and SOURCE_PRIOR.get(source, 0) > SOURCE_PRIOR.get(cand.source, 0):
                    cand.source, cand.reason = source, reason

    def step(name: str, direction: str) -> Any | None:
        axis = space.axes.get(name)
        return None if axis is None else axis.step(base[name], direction)

    # 1. neighbours of every parameter
    for name, axis in space.axes.items():
        for v in axis.neighbours(base[name]):
            add([(name, v)], "neighbour", f"one step on {name}", SOURCE_PRIOR["neighbour"])

    # 2. diagnostics of the last trial (a failure of a non-incumbent trial still tells us
    #    what to avoid next, but its moves are relative to the incumbent)
    if last is not None:
        moves: tuple[tuple[str, str], ...] = ()
        pairs: tuple = ()
        why = ""
        if last.failure in ("diverged",):
            moves, why = DIVERGED_MOVES, "the last trial diverged"
        elif last.failure in ("oom", "timeout"):
            moves, why = OOM_MOVES, f"the last trial hit {last.failure}"
        elif last.overfitting:
            moves, pairs, why = OVERFIT_MOVES, OVERFIT_PAIRS, "overfitting (validation peaked early, then fell)"
        elif last.underfitting:
            moves, pairs, why = UNDERFIT_MOVES, UNDERFIT_PAIRS, "underfitting (validation still rising)"
        for rank, (name, d) in enumerate(moves):
            # earlier moves in the list are the more standard remedy
            add([(name, step(name, d))], "diagnostic", f"{why}: {'raise' if d == 'up' else 'lower'} {name}",
                SOURCE_PRIOR["diagnostic"] * (1.0 - 0.08 * rank))
        for (n1, d1), (n2, d2) in pairs:
            add([(n1, step(n1, d1)), (n2, step(n2, d2))], "diagnostic",
                f"{why}: {n1} {d1} and {n2} {d2} together", SOURCE_PRIOR["diagnostic"] * 0.8)

    # 3. momentum: the move that made the incumbent, once more in the same direction
    if incumbent.base is not None and incumbent.changed:
        prev = next((o for o in history if o.number == incumbent.base), None)
        if prev is not None:
            moves_m = []
            for name in incumbent.changed:
                axis = space.axes.get(name)
                if axis is None or not axis.ordered:
                    continue
                d = _direction_of(axis, prev.params.get(name), base[name])
                if d:
                    moves_m.append((name, step(name, d)))
            if moves_m:
                add(moves_m, "momentum", "the move that made the incumbent, one step further",
                    SOURCE_PRIOR["momentum"])

    # 4. combine: moves that improved (or were positive within noise) on an older base
    base_values = {o.number: o.value for o in history}
    for o in history:
        if o.base is None or not o.ok or o.number == incumbent.number or not o.changed:
            continue
        bv = base_values.get(o.base)
        if bv is None or float(o.value) <= float(bv):  # type: ignore[arg-type]
            continue
        add([(n, o.params.get(n)) for n in o.changed], "combine",
            f"trial {o.number}'s change helped on trial {o.base}; replay it on the incumbent",
            SOURCE_PRIOR["combine"])

    # 5. rules from memory / transfer
    penalties: list[RuleHint] = []
    for h in hints or []:
        axis = space.axes.get(h.param)
        if axis is None:
            continue
        if h.avoid:
            penalties.append(h)
            continue
        v = _move_value(axis, base[h.param], h.direction, h.value)
        add([(h.param, v)], h.source, f"rule: {h.text or h.param}",
            SOURCE_PRIOR.get(h.source, 0.5) * max(0.0, min(1.0, h.confidence)))

    # 6. coverage: parameters never varied get a small bonus on their neighbours
    cov = coverage(history, space)
    uncovered = [n for n, vals in cov.items() if len(vals) <= 1 and len(space.axes[n].values) > 1]
    for cand in pool.values():
        if any(n in uncovered for n in cand.changed):
            cand.prior += SOURCE_PRIOR["coverage"]
            if "coverage" not in cand.sources:
                cand.sources.append("coverage")

    for h in penalties:
        for cand in pool.values():
            if h.param not in cand.changed:
                continue
            old, new = cand.changed[h.param]
            axis = space.axes[h.param]
            hit = (h.direction is not None and _direction_of(axis, old, new) == h.direction) or (
                h.direction is None and _same(new, h.value))
            if hit:
                cand.prior -= AVOID_PENALTY * max(0.0, min(1.0, h.confidence))

    # 7. a wider step when the one-step neighbourhood is (almost) used up: pairs of neighbour moves
    if len(pool) < min_pool and max_changes >= 2:
        singles = [(n, v) for n, axis in space.axes.items() for v in axis.neighbours(base[n])]
        for i, (n1, v1) in enumerate(singles):
            for n2, v2 in singles[i + 1:]:
                if n1 != n2:
                    add([(n1, v1), (n2, v2)], "neighbour", f"wider step on {n1} and {n2}",
                        SOURCE_PRIOR["neighbour"] - 0.05)

    plateau, stale = plateau_state(history, plateau_k)
    cands = list(pool.values())
    if plateau:
        fresh = [c for c in cands if any(n not in stale for n in c.changed)]
        if fresh:
            cands = fresh
            # forced diversity: the never-tried parameters first
            for c in cands:
                if any(n in uncovered for n in c.changed):
                    c.prior += SOURCE_PRIOR["coverage"]
    return CandidateSet(cands, plateau=plateau, stale_params=stale, uncovered=uncovered)


def random_config(space: SpaceView, rng: random.Random, tried: set[str] | None = None,
                  tries: int = 200) -> dict[str, Any] | None:
    """A uniformly random legal, untried configuration (OPRO's fallback), or None."""
    for _ in range(tries):
        cfg = {n: rng.choice(a.values) for n, a in space.axes.items()}
        if space.violation(cfg) is None and (tried is None or space.key(cfg) not in tried):
            return cfg
    return None


# ---- the agent's view of a `virtualmle.search.space.SearchSpace` ---------------------------

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
