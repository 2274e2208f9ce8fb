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
were already tried are dropped (the agent also drops a change of training length alone that would
repeat the incumbent's run epoch for epoch: `training_length.reruns_parent`). After K trials on the same parameters without
improvement (plateau) only candidates touching another parameter survive (forced diversity).
Parameters along which the incumbent's neighbourhood is flat are left alone by the agent
(`flat.py`).

Next to these local moves, three whole-configuration sources live in `global_candidates.py`.
The space itself is `space_view.SpaceView`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from virtualmle.agent.diagnostics import Diagnostics, Observation
from virtualmle.agent.prompts import fmt
from virtualmle.agent.space_view import Axis, ProposalRejected, SpaceView
from virtualmle.records import same_value

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
        text = ", ".join(f"{k} {fmt(a)} -> {fmt(b)}" for k, (a, b) in shown)
        return text + (f" (+{len(items) - len(shown)} more)" if len(shown) < len(items) else "")

    def to_dict(self) -> dict[str, Any]:
        return {"changes": {k: v for k, v in self.changed.items()}, "source": self.source,
                "sources": self.sources or [self.source], "reason": self.reason,
                "prior": round(self.prior, 4), "score": None if self.score is None else round(self.score, 4)}


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
    flat: list[str] = field(default_factory=list)  # set by the agent (`flat.flat_params`)


def coverage(history: list[Observation], space: SpaceView) -> dict[str, list[Any]]:
    """Per parameter, the distinct values tried so far (in the order first tried)."""
    out: dict[str, list[Any]] = {n: [] for n in space.axes}
    for o in history:
        for n in space.axes:
            v = o.params.get(n)
            if v is not None and not any(same_value(v, w) for w in out[n]):
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


Move = tuple[list[tuple[str, Any]], str, str, float]  # (name -> raw value moves, source, reason, prior)


def _step(space: SpaceView, base: dict[str, Any], name: str, direction: str) -> Any | None:
    axis = space.axes.get(name)
    return None if axis is None else axis.step(base[name], direction)


def neighbour_moves(space: SpaceView, base: dict[str, Any]) -> list[Move]:
    """``neighbour``: one step up or down (or another category) of every parameter."""
    return [([(name, v)], "neighbour", f"one step on {name}", SOURCE_PRIOR["neighbour"])
            for name, axis in space.axes.items() for v in axis.neighbours(base[name])]


def diagnostic_moves(space: SpaceView, base: dict[str, Any], last: Diagnostics | None) -> list[Move]:
    """``diagnostic``: the remedies the last trial's diagnosis calls for. A failure of a
    non-incumbent trial still says what to try next, but the moves are made on the incumbent."""
    if last is None:
        return []
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
    out: list[Move] = []
    for rank, (name, d) in enumerate(moves):
        # earlier moves in the list are the more standard remedy
        out.append(([(name, _step(space, base, name, d))], "diagnostic",
                    f"{why}: {'raise' if d == 'up' else 'lower'} {name}", SOURCE_PRIOR["diagnostic"] * (1.0 - 0.08 * rank)))
    for (n1, d1), (n2, d2) in pairs:
        out.append(([(n1, _step(space, base, n1, d1)), (n2, _step(space, base, n2, d2))], "diagnostic",
                    f"{why}: {n1} {d1} and {n2} {d2} together", SOURCE_PRIOR["diagnostic"] * 0.8))
    return out


def momentum_moves(space: SpaceView, base: dict[str, Any], incumbent: Observation,
                   history: list[Observation]) -> list[Move]:
    """``momentum``: the move that made the incumbent, once more in the same direction."""
    if incumbent.base is None or not incumbent.changed:
        return []
    prev = next((o for o in history if o.number == incumbent.base), None)
    if prev is None:
        return []
    moves = []
    for name in incumbent.changed:
        axis = space.axes.get(name)
        if axis is None or not axis.ordered:
            continue
        d = _direction_of(axis, prev.params.get(name), base[name])
        if d:
            moves.append((name, _step(space, base, name, d)))
    if not moves:
        return []
    return [(moves, "momentum", "the move that made the incumbent, one step further", SOURCE_PRIOR["momentum"])]


def combine_moves(incumbent: Observation, history: list[Observation]) -> list[Move]:
    """``combine``: changes that improved on an older base, replayed on the incumbent."""
    base_values = {o.number: o.value for o in history}
    out: list[Move] = []
    for o in history:
        if o.base is None or not o.ok or o.number == incumbent.number or not o.changed:
            continue
        bv = base_values.get(o.base)
        if bv is None or float(o.value) <= float(bv):  # type: ignore[arg-type]
            continue
        out.append(([(n, o.params.get(n)) for n in o.changed], "combine",
                    f"trial {o.number}'s change helped on trial {o.base}; replay it on the incumbent",
                    SOURCE_PRIOR["combine"]))
    return out


def rule_moves(space: SpaceView, base: dict[str, Any], hints: list[RuleHint]) -> list[Move]:
    """``transfer`` / ``memory``: the moves matched rules call for (``avoid`` rules are
    penalties, see `_penalise`)."""
    out: list[Move] = []
    for h in hints:
        axis = space.axes.get(h.param)
        if axis is None or h.avoid:
            continue
        v = _move_value(axis, base[h.param], h.direction, h.value)
        out.append(([(h.param, v)], h.source, f"rule: {h.text or h.param}",
                    SOURCE_PRIOR.get(h.source, 0.5) * max(0.0, min(1.0, h.confidence))))
    return out


def wider_moves(space: SpaceView, base: dict[str, Any]) -> list[Move]:
    """Pairs of neighbour moves: a wider step, for when the one-step neighbourhood is used up."""
    singles = [(n, v) for n, axis in space.axes.items() for v in axis.neighbours(base[n])]
    return [([(n1, v1), (n2, v2)], "neighbour", f"wider step on {n1} and {n2}", SOURCE_PRIOR["neighbour"] - 0.05)
            for i, (n1, v1) in enumerate(singles) for n2, v2 in singles[i + 1:] if n1 != n2]


class _Pool:
    """Candidates merged by configuration: the same configuration from several sources adds up
    its evidence (capped); illegal, tried and over-wide moves are dropped."""

    def __init__(self, space: SpaceView, base: dict[str, Any], tried: set[str], max_changes: int) -> None:
        self.space, self.base, self.tried, self.max_changes = space, base, tried, max_changes
        self.by_key: dict[str, Candidate] = {}

    def add(self, move: Move) -> None:
        moves, source, reason, prior = move
        moves = [(n, v) for n, v in moves if n in self.space.axes and v is not None]
        if not moves or len({n for n, _ in moves}) > self.max_changes:
            return
        try:
            cfg, changed = self.space.apply_changes(self.base, moves, max_changes=self.max_changes, tried=self.tried)
        except ProposalRejected:
            return
        key = self.space.key(cfg)
        cand = self.by_key.get(key)
        if cand is None:
            self.by_key[key] = Candidate(cfg, changed, source, reason, prior, [source])
        elif source not in cand.sources:
            cand.sources.append(source)
            cand.prior = min(1.5, cand.prior + max(prior, 0.0) * 0.5) if prior >= 0 else cand.prior + prior
            if prior > 0 and SOURCE_PRIOR.get(source, 0) > SOURCE_PRIOR.get(cand.source, 0):
                cand.source, cand.reason = source, reason


def _penalise(space: SpaceView, cands: Iterable[Candidate], hints: list[RuleHint]) -> None:
    """An ``avoid`` rule lowers the prior of every candidate making that move."""
    for h in hints:
        if not h.avoid or h.param not in space.axes:
            continue
        for cand in cands:
            if h.param not in cand.changed:
                continue
            old, new = cand.changed[h.param]
            hit = (h.direction is not None and _direction_of(space.axes[h.param], old, new) == h.direction) or (
                h.direction is None and same_value(new, h.value))
            if hit:
                cand.prior -= AVOID_PENALTY * max(0.0, min(1.0, h.confidence))


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
    """All local candidate changes of the incumbent (one function per source above), merged by
    configuration, illegal and tried ones removed, with a prior bonus per source (see
    `SOURCE_PRIOR`). When fewer than `min_pool` remain, pairs of neighbour moves are added."""
    base = {n: incumbent.params.get(n) for n in space.axes}
    tried = {space.key(o.params) for o in history} | {space.key(p) for p in pending or []}
    pool = _Pool(space, base, tried, max_changes)
    hints = hints or []
    for move in (neighbour_moves(space, base) + diagnostic_moves(space, base, last)
                 + momentum_moves(space, base, incumbent, history) + combine_moves(incumbent, history)
                 + rule_moves(space, base, hints)):
        pool.add(move)

    # coverage: parameters never varied get a small bonus on their neighbours
    cov = coverage(history, space)
    uncovered = [n for n, vals in cov.items() if len(vals) <= 1 and len(space.axes[n].values) > 1]
    for cand in pool.by_key.values():
        if any(n in uncovered for n in cand.changed):
            cand.prior += SOURCE_PRIOR["coverage"]
            if "coverage" not in cand.sources:
                cand.sources.append("coverage")
    _penalise(space, pool.by_key.values(), hints)

    if len(pool.by_key) < min_pool and max_changes >= 2:
        for move in wider_moves(space, base):
            pool.add(move)

    plateau, stale = plateau_state(history, plateau_k)
    cands = list(pool.by_key.values())
    if plateau:
        fresh = [c for c in cands if any(n not in stale for n in c.changed)]
        if fresh:
            cands = fresh
            # forced diversity: the never-tried parameters first
            for c in cands:
                if any(n in uncovered for n in c.changed):
                    c.prior += SOURCE_PRIOR["coverage"]
    return CandidateSet(cands, plateau=plateau, stale_params=stale, uncovered=uncovered)
