"""Flat parameters: where the incumbent's neighbourhood does not move, the agent stops moving.

A trial (a screen counts) that changed one parameter of the incumbent and repeated the
incumbent's validation curve, epoch for epoch, through the incumbent's best epoch, trained the
same model as far as the metric can tell: that parameter is *flat* near the incumbent, and local
candidates that move only flat parameters are dropped while others remain. One trial with the
same single change that moved the curve clears it. Changes of training length alone
(`FIDELITY_KEYS`) are never flat: with a constant schedule they replay the parent's first epochs
by construction.

Full-fidelity step 8, seed 0 (docs/full_fidelity.md): with strong score priors the incumbent's
first validation was already 0.0609; screens changing ``attn_dropout`` alone repeated its curve to
four decimals through its best epoch, and the agent spent the last 15 minutes of its budget
moving ``attn_dropout`` again and ``lr``.

The same waste, watched live (`repeats`): a running screen whose first validations repeat, epoch
for epoch, those of a finished trial with a flat curve is training that trial's model again (two
screens changing ``attn_dropout`` ran in parallel in step 12's seed 0, and both repeated the
incumbent's 0.0609, 0.0609, 0.0609, 0.0613, 0.0615 to four decimals). It can be stopped after a
few validations instead of at its end: the study already knows where that curve goes.
"""

from __future__ import annotations

from collections.abc import Iterable

from virtualmle.agent.candidates import Candidate
from virtualmle.agent.diagnostics import Observation
from virtualmle.agent.screen import FLAT_RANGE
from virtualmle.records import TrialRecord
from virtualmle.search.method import FIDELITY_KEYS, RunningTrial

__all__ = ["FLAT_MIN_POINTS", "FLAT_TOLERANCE", "flat_params", "repeats", "without_flat"]

# Two runs of the same seed whose validation curves agree this closely (relative, at every shared
# validated epoch) trained the same model: far inside run-to-run noise (a few percent).
FLAT_TOLERANCE = 0.002
FLAT_MIN_POINTS = 3


def flat_params(incumbent: Observation, trials: Iterable[Observation], *, tolerance: float = FLAT_TOLERANCE,
                min_points: int = FLAT_MIN_POINTS) -> list[str]:
    """The parameters the incumbent's neighbourhood is flat along (see the module docstring).

    A parameter is flat when a trial whose only change from the incumbent (``base``) was that
    parameter matched the incumbent's validation value within ``tolerance`` (relative) at every
    epoch both validated, at least ``min_points`` of them, the incumbent's best epoch among them
    or before the last; and no such trial differed at any shared epoch."""
    ref = incumbent.by_epoch
    if not ref:
        return []
    best_epoch = max(ref, key=lambda e: (ref[e], -e))
    matched: set[str] = set()
    moved: set[str] = set()
    for o in trials:
        if o.base != incumbent.number or o.number == incumbent.number or len(o.changed) != 1:
            continue
        name = o.changed[0]
        shared = sorted(set(o.by_epoch) & set(ref))
        if name in FIDELITY_KEYS or not shared:
            continue
        if any(abs(o.by_epoch[e] - ref[e]) > tolerance * abs(ref[e]) for e in shared):
            moved.add(name)
        elif len(shared) >= min_points and shared[-1] >= best_epoch:
            matched.add(name)
    return sorted(matched - moved)


def without_flat(candidates: list[Candidate], flat: Iterable[str]) -> list[Candidate]:
    """``candidates`` less those that move only ``flat`` parameters, unless none would remain."""
    flat = set(flat)
    moving = [c for c in candidates if any(n not in flat for n in c.changed)]
    return moving or candidates


def repeats(trial: RunningTrial, finished: Iterable[TrialRecord], metric: str, *, points: int,
            tolerance: float = FLAT_TOLERANCE) -> str | None:
    """Why the running screen ``trial`` repeats a finished trial's flat curve, or None.

    Its first ``points`` validations (epochs 1..points, each epoch validated) match, within
    ``tolerance`` (relative), the validations of a trial in ``finished`` at the same epochs; and
    that trial's curve is flat: three or more validations, all within `FLAT_RANGE` of its
    best. Replayed on the committed full-fidelity journals (steps 1-12, every agent run) with
    ``points`` 2: 22 screens would have stopped, 2,084 s of compute saved, and none of them ended
    more than 0.2% above the trial it repeated. A rising curve is never the reference: the first
    validations of a slow start look alike across configurations and part later."""
    if points <= 0 or len(trial.curve) < points or trial.epochs != len(trial.curve):
        return None
    mine = trial.curve[:points]
    for rec in finished:
        if rec.number == trial.number:
            continue
        ref = rec.by_epoch(metric)
        values = list(ref.values())
        if len(values) < 3 or min(values) < max(values) * (1 - FLAT_RANGE):
            continue
        if all(e + 1 in ref and abs(v - ref[e + 1]) <= tolerance * abs(ref[e + 1]) for e, v in enumerate(mine)):
            return (f"its first {points} validations ({', '.join(f'{v:.4f}' for v in mine)}) repeat trial "
                    f"#{rec.number}'s within {tolerance:.1%}, and #{rec.number}'s curve is flat "
                    f"({min(values):.4f}-{max(values):.4f}): it would train that model again")
    return None
