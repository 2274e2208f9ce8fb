"""Screen, then promote: the agent spends compute as an engineer does (issue 13 section 2).

With ``screen_epochs`` > 0 the agent works in rounds. A round trains its ``screen_width`` best
candidates (picked as single trials would be: surrogate, rules, the LLM among near ties) for only
``screen_epochs`` epochs each. The loop records each as pruned (``stopped_by: screen``) and keeps
its checkpoint. When every screen of a round has finished, the best one by validation is
*promoted*: the same configuration continues from its checkpoint to its full training length, so
its first epochs are not paid twice, and that trial is the round's full observation. The best
screen is not promoted when it trails the incumbent's own curve at the same epoch by more than
``tolerance`` (relative): the round's compute stops there and the reason is recorded. A screen
whose curve is `falling` (past its peak, its last two validations each lower, the last more than
2% below its best) and whose best is below the incumbent's best is left out: continuing the same
run is unlikely to make it the choice.

A finished screen that already matches the incumbent's best validation, and leads its round so
far, is promoted *early*, without waiting for the round's other screens (as ASHA promotes
without waiting for a rung to fill). Waiting cost the most promising runs of step 4: a screen at
0.0615 (incumbent 0.0603) waited for its round until the compute budget ran out, and a screen
that runs its epochs is never the study's choice (one the budget cuts is: `stored.cut_by_budget`).
The round still ends as above, but then promotes only a screen that
beats the one promoted early.

A promotion that would only confirm its screen's curve continues with less patience
(`confirming`): a screen already past its peak ends at once and is tested at its best epoch, a
flat one stops once its noise-sized gains end. The trial's stored ``fidelity`` and its
``promotion`` reason say so.

Screens are partial curves: the surrogate never fits them, the incumbent is never one, but their
configurations are not proposed again. Rounds are read back from the trials' attributes, so a
resumed study continues the round it was in. A candidate with a decaying learning-rate schedule
is screened too: the screen's schedule spans the full run (``schedule_epochs``), so its first
epochs are exactly the full run's and the promotion continues them. A candidate that changes only
the training length (`FIDELITY_KEYS`) is not screened either: its first epochs are its parent's, so
a screen would measure nothing new.

A round waits for all of its screens, so one expensive screen (a full softmax at a large width:
15 minutes where the others took one) holds back the round's promotion. `costly` stops a screen
that has cost, or on its pace would cost, more than ``factor`` times the study's median finished
screen; the round then promotes the best of the others. A screen that is `ahead` (at or above
the incumbent's best validation, and at or above every finished screen at the same epoch) is never
stopped for its cost: an engineer pays for the most promising run, not for one a cheaper screen
already matches. The stop and its numbers are stored as the trial's
``stop_reason``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from virtualmle.agent.diagnostics import OVERFIT_DROP
from virtualmle.records import A_PROMOTED_FROM, A_SCREEN, A_SCREEN_SETTLED, Outcome, TrialRecord
from virtualmle.search.method import RunningTrial


@dataclass
class Round:
    """One screening round as stored: its finished screens and whether it is settled."""

    number: int
    screens: list[TrialRecord] = field(default_factory=list)
    settled: bool = False  # a trial was promoted from it, or a decision not to was recorded
    early: set[int] = field(default_factory=set)  # its screens promoted before it ended

    def cut(self) -> list[TrialRecord]:
        """Screens that really stopped at the screen (an early stop before it is a full result)."""
        return [r for r in self.screens if r.outcome is Outcome.PRUNED and r.value is not None
                and r.user_attrs.get("stopped_by") == "screen"]


def is_screen(attrs: dict[str, Any]) -> bool:
    """Whether a trial's attributes mark it as a screen the loop cut short."""
    return isinstance(attrs.get(A_SCREEN), dict) and attrs.get("stopped_by") == "screen"


def rounds(history: list[TrialRecord]) -> dict[int, Round]:
    """The study's screening rounds, from the trials' ``screen`` / ``promoted_from`` attributes
    and the ``screen_round_settled`` notes of later steps."""
    out: dict[int, Round] = {}
    by_number = {r.number: r for r in history}
    for rec in history:
        mark = rec.user_attrs.get(A_SCREEN)
        if isinstance(mark, dict) and isinstance(mark.get("round"), int):
            out.setdefault(mark["round"], Round(mark["round"])).screens.append(rec)
    for rec in history:
        src = by_number.get(rec.user_attrs.get(A_PROMOTED_FROM))  # type: ignore[arg-type]
        mark = src.user_attrs.get(A_SCREEN) if src is not None else None
        step = rec.user_attrs.get("agent") or {}
        if isinstance(mark, dict) and mark.get("round") in out:
            if step.get("early"):
                out[mark["round"]].early.add(src.number)  # type: ignore[union-attr]
            else:
                out[mark["round"]].settled = True
        settled = step.get("screen_round_settled")
        if isinstance(settled, int) and settled in out:
            out[settled].settled = True
    return out


def epoch_value(rec: TrialRecord, metric: str, epoch: int) -> float | None:
    """The best validation ``metric`` a trial had reached by ``epoch`` (None: not validated by then)."""
    values = [v for e, v in rec.by_epoch(metric).items() if e <= epoch]
    return max(values) if values else None


@dataclass
class Decision:
    """What screening asks of the next step.

    Attributes:
        promote: the screen to continue from (a promotion), or None.
        settle: a round closed without promotion: ``{"round", "reason"}`` for the step's record.
        screen_round: the round a new screen joins (None: screening does not apply).
    """

    promote: TrialRecord | None = None
    settle: dict[str, Any] | None = None
    screen_round: int | None = None
    reason: str = ""
    early: bool = False  # the promotion does not wait for the rest of its round


def note_settled(decision: Decision, attrs: dict[str, Any], step: dict[str, Any]) -> None:
    """Record a round the decision settled without promotion on the proposal (``attrs``, ``step``)."""
    if decision.settle:
        attrs[A_SCREEN_SETTLED] = decision.settle["reason"]
        step["screen_round_settled"] = decision.settle["round"]


def decide(history: list[TrialRecord], incumbent: TrialRecord | None, issued: dict[int, int], *,
           width: int, epochs: int, metric: str, tolerance: float,
           promoting: set[int] = frozenset(), early: set[int] = frozenset()) -> Decision:  # type: ignore[assignment]
    """The next screening step: promote a finished round's best (or a leading screen early),
    settle a round, or screen more.

    ``issued`` counts the screens this process proposed per round (some may still run); the
    stored trials count too, so a resumed study does not start its round again. ``promoting`` /
    ``early``: screens whose end-of-round / early promotion this process proposed and that has not
    finished yet.
    """
    all_rounds = rounds(history)
    for rnd in all_rounds.values():
        numbers = {r.number for r in rnd.screens}
        rnd.settled |= bool(numbers & set(promoting))
        rnd.early |= numbers & set(early)
    settle: dict[str, Any] | None = None
    for rnd in sorted(all_rounds.values(), key=lambda r: r.number):
        if rnd.settled or max(len(rnd.screens), issued.get(rnd.number, 0)) < width:
            continue
        if len(rnd.screens) < max(width, issued.get(rnd.number, 0)):
            continue  # some of its screens still run
        cut, leader = _open_screens(rnd)
        spent = [r for r in cut if _spent(r, incumbent, metric)]
        cut = [r for r in cut if r not in spent]
        left_out = _left_out(spent, incumbent)
        if not cut:
            settle = {"round": rnd.number, "reason": (
                "its best screen was promoted early; no other beats it" if rnd.early else
                "no screen of the round was cut short and complete: nothing to promote" if not spent else
                "no screen worth continuing") + left_out}
            continue
        best = _best(cut)
        others = ", ".join(f"#{r.number} {float(r.value):.4f}" for r in rnd.cut()  # type: ignore[arg-type]
                           if r is not best and r not in spent)
        ref = epoch_value(incumbent, metric, epochs) if incumbent is not None else None
        if ref is not None and float(best.value) < ref * (1.0 - tolerance):  # type: ignore[arg-type]
            settle = {"round": rnd.number, "reason": (
                f"best screen #{best.number} {float(best.value):.4f} at {epochs} epochs trails the incumbent "
                f"#{incumbent.number}'s {ref:.4f} at the same epoch by more than {tolerance:.0%}: "
                f"not promoted{left_out}")}  # type: ignore[union-attr]
            continue
        reason = (f"promoted: best of {len(rnd.cut())} screened at {epochs} epochs, valid {metric} "
                  f"{float(best.value):.4f}" + (f" (others {others})" if others else "")  # type: ignore[arg-type]
                  + (f"; beats #{leader.number} promoted early ({float(leader.value):.4f})"  # type: ignore[arg-type]
                     if leader is not None else "")
                  + (f"; incumbent #{incumbent.number} had {ref:.4f} by then" if ref is not None
                     and incumbent is not None else "")
                  + left_out + "; continues from its checkpoint")
        return Decision(promote=best, settle=settle, reason=reason)
    promote = _early(all_rounds, incumbent, epochs, metric)
    if promote is not None:
        return Decision(promote=promote[0], settle=settle, reason=promote[1], early=True)
    open_rounds = [r for r in all_rounds.values() if not r.settled] + [
        Round(n) for n in issued if n not in all_rounds]
    for rnd in sorted(open_rounds, key=lambda r: r.number):
        if max(len(rnd.screens), issued.get(rnd.number, 0)) < width:
            return Decision(settle=settle, screen_round=rnd.number)
    known = set(all_rounds) | set(issued)
    return Decision(settle=settle, screen_round=max(known) + 1 if known else 0)


def falling(rec: TrialRecord, metric: str) -> bool:
    """Whether a screen's validation curve has passed its peak and keeps falling: each of its last
    two validations below the one before (a dip at one validation is noise, not a trend), and the
    last more than `OVERFIT_DROP` (relative) below its best (two drops of 0.0001 are noise too)."""
    curve = rec.curve(metric)
    return len(curve) >= 3 and curve[-1] < curve[-2] < curve[-3] and curve[-1] < max(curve) * (1 - OVERFIT_DROP)


def _spent(rec: TrialRecord, incumbent: TrialRecord | None, metric: str) -> bool:
    """A screen not worth continuing: `falling`, and its best is below the incumbent's best, so
    more epochs of the same run are unlikely to make it the choice (step 7 of the full-fidelity script
    promoted one, 0.0570 then 0.0554, 0.0541, against the incumbent's 0.0578: 459 s spent on a run
    that went on falling)."""
    return (incumbent is not None and incumbent.value is not None and falling(rec, metric)
            and float(rec.value) < float(incumbent.value))  # type: ignore[arg-type]


def _left_out(spent: list[TrialRecord], incumbent: TrialRecord | None) -> str:
    """The reason's note on `_spent` screens ("" without any)."""
    if not spent or incumbent is None:
        return ""
    names = ", ".join(f"#{r.number} {float(r.value):.4f}" for r in spent)  # type: ignore[arg-type]
    return f"; {names} left out: falling since its peak, below the incumbent's best {float(incumbent.value):.4f}"  # type: ignore[arg-type]


def _best(screens: list[TrialRecord]) -> TrialRecord:
    """The best of finished screens by validation (the earliest trial among ties)."""
    return max(screens, key=lambda r: (float(r.value), -r.number))  # type: ignore[arg-type]


def _open_screens(rnd: Round) -> tuple[list[TrialRecord], TrialRecord | None]:
    """The round's finished screens still worth a promotion: not promoted early, and above the
    best one that was (returned second; None without an early promotion)."""
    promoted = [r for r in rnd.cut() if r.number in rnd.early]
    leader = _best(promoted) if promoted else None
    bar = -math.inf if leader is None else float(leader.value)  # type: ignore[arg-type]
    return [r for r in rnd.cut() if r.number not in rnd.early and float(r.value) > bar], leader  # type: ignore[arg-type]


def _early(all_rounds: dict[int, Round], incumbent: TrialRecord | None, epochs: int,
           metric: str) -> tuple[TrialRecord, str] | None:
    """A finished screen of an unsettled round that matches the incumbent's best validation and
    leads its round so far: promoted without waiting for the round (with the reason)."""
    if incumbent is None or incumbent.value is None:
        return None
    for rnd in sorted(all_rounds.values(), key=lambda r: r.number):
        cut, _ = _open_screens(rnd)
        if rnd.settled or not cut:
            continue
        best = _best(cut)
        if float(best.value) >= float(incumbent.value):  # type: ignore[arg-type]
            return best, (f"promoted early: screen #{best.number} has valid {metric} {float(best.value):.4f} "  # type: ignore[arg-type]
                          f"after {epochs} epochs, at or above the incumbent #{incumbent.number}'s best "
                          f"{float(incumbent.value):.4f}, and leads round {rnd.number} so far: its other "
                          f"screens are not waited for; continues from its checkpoint")
    return None


PAST_PEAK_DROP = 0.05  # a screen this far below its best, two validations after it, has peaked
FLAT_RANGE = 0.03  # a screen whose validations all lie within this share of its best is flat


def confirming(screen: TrialRecord, metric: str, *, patience: int | None,
               flat_patience: int) -> tuple[dict[str, Any], str] | None:
    """The fidelity a promotion of ``screen`` continues with when more epochs would only confirm
    what its curve already shows (less patience), with the reason; None to keep the
    configuration's (``patience`` 0: no early stopping; None: not known, so the flat rule does
    not apply).

    - Past its peak (its best two or more validations back, its last more than `PAST_PEAK_DROP`
      below it) in a configuration that stops early (patience not 0; None is the trainer's
      default, 3): ``{"patience": k}`` with k the validations since its best, so the promotion
      ends at once and is tested at its best epoch, as early stopping would have ended it had the
      curve not climbed back within the configuration's patience (a run without early stopping,
      e.g. one whose decaying learning rate may lift a later epoch, is left to run). In the
      full-fidelity runs (steps 1-11) none of the 16 promotions of such screens climbed back; they
      cost 116-441 s each.
    - Flat (every validation within `FLAT_RANGE` of its best, three or more of them): patience at
      most ``flat_patience`` (0: this rule is off). A flat curve's gains are noise-sized: a
      promotion with patience 43 crept from 0.0599 to 0.0600 in 106 epochs (672 s). Patience
      counts any gain; a gain-size threshold (``min_delta``) on top of patience 5 was replayed on
      the 38 flat promotions of the committed full-fidelity journals and is not used: 0.005 would
      have saved 198 s more in all and lost 0.0007 more, on two (one at 0.0590 instead of
      0.0596); 0.01, 647 s more and 0.0026 more, on three (docs/search.md).
    """
    curve = screen.curve(metric)
    if len(curve) < 3 or max(curve) <= 0:
        return None
    best = max(curve)
    since = len(curve) - 1 - curve.index(best)
    if patience != 0 and since >= 2 and curve[-1] < best * (1 - PAST_PEAK_DROP):
        return {"patience": since}, (
            f"its curve peaked at {best:.4f} {since} validations back and fell to {curve[-1]:.4f}: "
            f"it continues with patience {since}, so it ends at once and is tested at its best epoch")
    if flat_patience <= 0 or patience is None or min(curve) < best * (1 - FLAT_RANGE):
        return None
    if patience != 0 and not patience > flat_patience:
        return None
    return {"patience": flat_patience}, (
        f"its curve is flat ({min(curve):.4f}-{best:.4f}): it continues with patience "
        f"{flat_patience}, not {patience}, so it stops once noise-sized gains end")


def costly(seconds: float, epochs: int, max_epochs: int, finished: list[float], *, factor: float,
           floor: float = 0.0, min_reference: int = 2, epoch_seconds: float = 0.0,
           validated_at: float = 0.0) -> str | None:
    """Why a running screen costs too much to wait for, or None to let it run.

    The cap is the larger of ``factor`` times the median of the study's finished screens and
    ``floor`` (a share of the compute budget): a screen is stopped only when it is both far
    costlier than the others and a large part of what the study may spend.

    Args:
        seconds: compute the screen has used so far (process start included, as for ``finished``).
        epochs: epochs it had trained by its last validation (0: none yet).
        max_epochs: the screen's length in epochs.
        finished: the compute of the study's finished screens (the reference: their median).
        factor: the cap, as a multiple of that median (0: no cap).
        floor: the cap is never below this many seconds.
        min_reference: finished screens needed before any screen is judged.
        epoch_seconds: what its ``epochs`` validated epochs took (their logs' seconds): its pace
            per epoch, start-up excluded. Its cost at the end is projected as ``validated_at``
            plus the epochs left at that pace (never below ``seconds``); without it (0), as
            ``seconds / epochs * max_epochs``, which counts start-up and the time since the last
            validation as if every epoch had them.
        validated_at: compute seconds it had used at its last validation.
    """
    if factor <= 0 or len(finished) < min_reference or (max_epochs and epochs >= max_epochs):
        return None  # (a screen at its last validation is done: stopping it would only lose it)
    ref = statistics.median(finished)
    if ref <= 0:
        return None
    cap = max(factor * ref, floor)
    why = (f"more than its cap of {cap:.0f} s (the larger of {factor:g}x the median finished screen's "
           f"{ref:.0f} s and {floor:.0f} s, a share of the compute budget)" if floor > 0
           else f"more than {factor:g}x the median finished screen's {ref:.0f} s")
    if seconds > cap:
        return f"this screen has run {seconds:.0f} s, {why}: stopped so its round can promote without it"
    if not 0 < epochs < max_epochs:
        return None
    if epoch_seconds > 0:
        projected = max(seconds, validated_at + (max_epochs - epochs) * epoch_seconds / epochs)
    else:
        projected = seconds / epochs * max_epochs
    if projected > cap:
        return (f"after {epochs} of {max_epochs} epochs ({seconds:.0f} s) this screen would cost about "
                f"{projected:.0f} s, {why}: stopped so its round can promote without it")
    return None


def ahead(value: float, epoch: int, incumbent: TrialRecord | None, screens: list[TrialRecord], metric: str) -> bool:
    """Whether a running screen, at best validation ``value`` by ``epoch``, is the most promising
    run the study has: at or above the incumbent's best, and at or above what each finished screen
    had reached by the same epoch (such a screen is never stopped for its cost).

    The incumbent is held to its best, not to what it had by the same epoch: a full run that
    started slowly (0.0083 after one epoch, 0.0622 after 32) would make every expensive screen look
    ahead early on. Step 7 of the full-fidelity script tried the same-epoch bar; it spared a screen
    that peaked at its first validation below the incumbent's best (914 s with its promotion) and
    a 380 s-per-epoch screen (1,326 s), of two studies' 2,700 s (docs/full_fidelity.md)."""
    if incumbent is None or incumbent.value is None or value < float(incumbent.value):
        return False
    return all(value >= v for r in screens if (v := epoch_value(r, metric, epoch)) is not None)


def screen_too_costly(trial: RunningTrial, screens: list[TrialRecord], incumbent: TrialRecord | None, metric: str,
                      *, factor: float, floor: float = 0.0) -> str | None:
    """Why the running screen ``trial`` should stop for its cost (`costly`), unless it is `ahead`;
    ``screens``: the study's finished screens."""
    if trial.curve and ahead(max(trial.curve), trial.epochs, incumbent, screens, metric):
        return None
    return costly(trial.seconds, trial.epochs, trial.max_epochs, [r.seconds for r in screens if r.seconds > 0],
                  factor=factor, floor=floor, epoch_seconds=trial.epoch_seconds, validated_at=trial.validated_at)
