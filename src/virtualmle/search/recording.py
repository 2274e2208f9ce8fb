"""How a trial is written into the Optuna study: its params and distributions, its fidelity, and
its result, with ``outcome`` stored last.

``outcome`` goes last because a resume reads it as "the whole result is stored": a process killed
after it (in the method's observe step) leaves a trial that the next run observes from storage
instead of training it again (`conclude.TrialCloser.redo_observe`).
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.distributions import FloatDistribution, IntDistribution

from virtualmle.records import Outcome, TrialRecord
from virtualmle.search.executor import TrialOutcome
from virtualmle.search.method import FIDELITY_KEYS, Proposal
from virtualmle.search.space import SearchSpace
from virtualmle.search.stored import method_attrs, slim_epoch

__all__ = ["distributions_for", "fidelity_attrs", "record_for", "result_attrs", "store_result"]

# Who asked a trial to stop early and why: ("budget" | "pruner" | "method" | "screen", reason).
Stop = tuple[str, "str | None"]


def distributions_for(space: SearchSpace, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Split a proposal into Optuna params + distributions, and extras kept as a user attr.

    A numeric value outside its range widens that trial's distribution (Optuna allows differing
    ranges); a categorical value not among the choices, or a non-numeric parameter outside the
    space, goes to ``extra_params`` (Optuna forbids changing categorical choices).
    """
    dists: dict[str, Any] = {}
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in params.items():
        spec = space.params.get(name)
        if spec is not None and spec.contains(value):
            dists[name], values[name] = spec.distribution(), value
            continue
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if spec is not None and numeric and spec.type in ("float", "int") and math.isfinite(value):
            low, high = min(spec.low, value), max(spec.high, value)
            if spec.type == "int" and isinstance(value, int):
                dists[name] = IntDistribution(int(low), int(high), log=spec.log)
            else:
                dists[name] = FloatDistribution(float(low), float(high), log=spec.log)
            values[name] = value
        elif spec is None and isinstance(value, int) and not isinstance(value, bool):
            dists[name], values[name] = IntDistribution(value, value), value  # e.g. seed
        elif spec is None and isinstance(value, float) and math.isfinite(value) and value > 0:
            dists[name], values[name] = FloatDistribution(value, value), value
        else:
            extra[name] = value
    return dists, values, extra


def fidelity_attrs(proposal: Proposal) -> dict[str, Any]:
    """A proposal's fidelity and promotion as user attrs (so a resumed study runs it the same)."""
    bad = sorted(set(proposal.fidelity) - FIDELITY_KEYS)
    if bad:
        raise ValueError(f"a proposal's fidelity may set only {', '.join(sorted(FIDELITY_KEYS))}, not {bad[0]}")
    attrs: dict[str, Any] = {}
    if proposal.fidelity:
        attrs["fidelity"] = dict(proposal.fidelity)
    if proposal.resume_from is not None:
        attrs["resume_from"] = int(proposal.resume_from)
    return attrs


def result_attrs(out: TrialOutcome, *, screen: bool, stop: Stop | None,
                 metric: str) -> tuple[Outcome, dict[str, Any], float | None]:
    """The outcome, the user attrs and the value of a finished trial.

    A screen that trained to its (reduced) ``max_epochs`` has a partial curve: it is recorded as
    pruned (``stopped_by: screen``), never as a full observation. ``stop`` (who asked the trial to
    end early) is stored only when the trial did end early.
    """
    result = out.result or {}
    outcome = out.outcome
    if outcome is Outcome.COMPLETE and screen and result.get("stopped") == "max_epochs":
        why = f"screened for {len(result.get('epochs') or [])} validation(s), to be compared before promotion"
        outcome, stop = Outcome.PRUNED, ("screen", why)
    attrs: dict[str, Any] = {"outcome": outcome.value, "seconds": round(out.seconds, 3), "log": out.log_path}
    value = None
    if result.get("resumed_epoch"):
        attrs["resumed_epoch"] = result["resumed_epoch"]
    if outcome is Outcome.PRUNED and stop is not None:
        attrs["stopped_by"] = stop[0]
        if stop[1]:
            attrs["stop_reason"] = stop[1]
    if outcome in (Outcome.COMPLETE, Outcome.PRUNED):
        valid = result.get("valid", {})
        value = valid.get(metric)
        attrs.update(
            valid=valid,
            test=result.get("test", {}),
            num_params=result.get("num_params"),
            best_epoch=result.get("best_epoch"),
            stopped=result.get("stopped"),
            eval_mask=result.get("eval_mask"),  # the protocol the metrics were ranked with
        )
    else:
        attrs["error"] = out.error
        if out.traceback:
            attrs["traceback"] = out.traceback
    attrs["epochs"] = [slim_epoch(e) for e in (result.get("epochs") or out.epochs)]
    return outcome, attrs, value


def store_result(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Write ``attrs`` on the trial, ``outcome`` last (see the module's docstring)."""
    for key, value in attrs.items():
        if key != "outcome":
            trial.set_user_attr(key, value)
    trial.set_user_attr("outcome", attrs["outcome"])


def record_for(trial: optuna.Trial, params: dict[str, Any], outcome: Outcome, value: float | None,
               attrs: dict[str, Any], out: TrialOutcome) -> TrialRecord:
    """What the method observes of a stored trial (no test metrics)."""
    return TrialRecord(
        number=trial.number,
        params=params,
        outcome=outcome,
        value=value,
        valid=dict(attrs.get("valid", {})),
        epochs=tuple(attrs["epochs"]),
        seconds=out.seconds,
        num_params=attrs.get("num_params"),
        error=out.error,
        user_attrs=method_attrs(trial),
        stopped=attrs.get("stopped"),
    )
