"""Trials as the study stores them: what counts against the budget, the method's view of a
stored trial, and the summary of a study (best on validation, its test metrics, its cost).

Shared by the loop (`search/loop.py`), the bench and the report: everything here reads storage
and nothing writes it.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from virtualmle.records import Outcome, TrialRecord
from virtualmle.search.options import SearchSummary

# User attrs the loop owns; everything else on a trial came from the method.
RESERVED_ATTRS = frozenset({
    "outcome", "valid", "test", "seconds", "num_params", "best_epoch", "stopped", "epochs", "error",
    "traceback", "owner", "extra_params", "free", "rerun_of", "method", "log",
})


def record_from_trial(trial: FrozenTrial, metric: str | None = None) -> TrialRecord:
    """The method's view of a stored trial (no test metrics).

    With ``metric``, the value of a completed or pruned trial is that metric at its best
    validation epoch (its ``valid`` attrs), as the live process saw it: Optuna's value of a pruned
    trial is its *last* reported epoch, so a screen that peaked and fell would rank lower after a
    resume than before it (and the resumed agent would promote another screen).
    """
    attrs = trial.user_attrs
    if trial.state == TrialState.PRUNED:
        outcome = Outcome.PRUNED  # studies written before screens were stored as pruned say complete
    elif "outcome" in attrs:
        outcome = Outcome(attrs["outcome"])
    else:
        outcome = {TrialState.COMPLETE: Outcome.COMPLETE, TrialState.PRUNED: Outcome.PRUNED}.get(
            trial.state, Outcome.FAILED
        )
    value = trial.value if trial.state in (TrialState.COMPLETE, TrialState.PRUNED) else None
    best = (attrs.get("valid") or {}).get(metric) if metric else None
    if outcome in (Outcome.COMPLETE, Outcome.PRUNED) and isinstance(best, (int, float)) and math.isfinite(best):
        value = float(best)
    return TrialRecord(
        number=trial.number,
        params={**trial.params, **attrs.get("extra_params", {})},
        outcome=outcome,
        value=value,
        valid=dict(attrs.get("valid", {})),
        epochs=tuple(attrs.get("epochs", ())),
        seconds=float(attrs.get("seconds", 0.0)),
        num_params=attrs.get("num_params"),
        error=attrs.get("error"),
        user_attrs={k: v for k, v in attrs.items() if k not in RESERVED_ATTRS},
        stopped=attrs.get("stopped"),
    )


def cut_by_budget(attrs: dict[str, Any], metric: str) -> float | None:
    """The validation `metric` of the best epoch of a trial the compute budget ended (from
    `attrs`, its user attrs; Optuna's value of a pruned trial is its last reported epoch, not its
    best), or None when the trial may not be the study's choice: a pruned trial another reason
    stopped (a pruner, the method, a screen that ran its epochs) or one whose test metrics were not
    measured. A screen the budget cut counts like any run cut at the deadline: its first epochs are
    exactly its full run's (its schedule spans the full run), and its best epoch's weights are
    tested (step 10 of the full-fidelity script lost two screens at 0.0641, above the 0.0630 its
    study chose, to this rule's earlier form)."""
    if attrs.get("stopped_by") != "budget" or not attrs.get("test"):
        return None
    value = (attrs.get("valid") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def choice_value(trial: FrozenTrial, metric: str) -> float | None:
    """The validation value a trial competes with for the study's choice; None: it cannot be
    chosen. A completed trial, or one the compute budget ended (`cut_by_budget`): a run cut at the
    deadline holds the weights of its best validation epoch and their test metrics, as a finished
    run does. What a pruner, the method or a screen stopped is a partial curve judged not worth
    finishing, never a choice."""
    if trial.state == TrialState.COMPLETE:
        return trial.value
    if trial.state == TrialState.PRUNED:
        return cut_by_budget(trial.user_attrs, metric)
    return None


def counts(trial: FrozenTrial) -> bool:
    """Whether a finished trial used up budget."""
    if not trial.state.is_finished():
        return False
    if trial.user_attrs.get("free"):
        return False
    return trial.user_attrs.get("outcome") != Outcome.INTERRUPTED.value


def holds_budget(trial: FrozenTrial) -> bool:
    """Whether a stored trial takes a place in the budget: finished and counting, or running.

    Read from storage by every process on the study, so N processes together run exactly the
    budget. WAITING trials (enqueued, not started) hold nothing yet.
    """
    if trial.state == TrialState.RUNNING:
        return not trial.user_attrs.get("free") and trial.user_attrs.get("outcome") != Outcome.INTERRUPTED.value
    return counts(trial)


def same_owner(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return bool(a and b) and all(a.get(k) == b.get(k) for k in ("host", "pid", "start"))


def method_attrs(trial: optuna.Trial | FrozenTrial) -> dict[str, Any]:
    return {k: v for k, v in trial.user_attrs.items() if k not in RESERVED_ATTRS}


def slim_epoch(log: dict[str, Any]) -> dict[str, Any]:
    return {k: log[k] for k in ("epoch", "train_loss", "valid", "seconds") if k in log}


def summarize(study: optuna.Study, method: str, metric: str, budget: int, *, wall: float = 0.0,
              exhausted: bool = False) -> SearchSummary:
    """Best-on-validation trial of a study, its test metrics, and what the study cost."""
    trials = study.get_trials(deepcopy=False)
    outcomes: dict[str, int] = {}
    for t in trials:
        if t.user_attrs.get("free"):
            continue
        key = t.user_attrs.get("outcome") or t.state.name.lower()
        outcomes[key] = outcomes.get(key, 0) + 1
    scored = [(v, t) for t in trials if (v := choice_value(t, metric)) is not None]
    best_value, best = max(scored, key=lambda p: (p[0], -p[1].number)) if scored else (None, None)
    return SearchSummary(
        study_name=study.study_name,
        method=method,
        metric=metric,
        budget=budget,
        trials_used=sum(1 for t in trials if counts(t)),
        outcomes=outcomes,
        best_number=best.number if best else None,
        best_value=best_value,
        best_params={**best.params, **best.user_attrs.get("extra_params", {})} if best else {},
        best_valid=dict(best.user_attrs.get("valid", {})) if best else {},
        best_test=dict(best.user_attrs.get("test", {})) if best else {},
        compute_seconds=round(sum(float(t.user_attrs.get("seconds", 0.0)) for t in trials), 3),
        wall_seconds=round(wall, 3),
        exhausted=exhausted,
    )
