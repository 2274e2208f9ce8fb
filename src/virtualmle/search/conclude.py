"""How the search loop ends a trial: the method observes it, the study is told, a model is kept.

`TrialCloser` holds the end of a trial's life, shared by every way a trial ends: trained and
stored (`conclude`), invalid before training (`invalid`), dropped over budget (`drop`), or trained
by a process that died in the method's observe step (`redo_observe`: observed again from its
stored result, never retrained). Starting trials and waiting for them stay in `search/loop.py`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from virtualmle.errors import ObserveIncomplete, VirtualMLEError
from virtualmle.records import Outcome, TrialRecord
from virtualmle.search.method import Method, SearchContext
from virtualmle.search.model_keeper import ModelKeeper
from virtualmle.search.storage import owner_alive
from virtualmle.search.stored import RESERVED_ATTRS, cut_by_budget, method_attrs, record_from_trial

logger = logging.getLogger(__name__)

__all__ = ["TrialCloser"]


class TrialCloser:
    """Ends trials of one study for one method; `after` runs once each concluded trial is told."""

    def __init__(self, method: Method, ctx: SearchContext, study: optuna.Study, keeper: ModelKeeper,
                 metric: str, owner: dict[str, Any], after: Callable[[], None]) -> None:
        self.method, self.ctx, self.study, self.keeper = method, ctx, study, keeper
        self.metric, self.owner, self._after = metric, owner, after

    def invalid(self, trial: optuna.Trial, params: dict[str, Any], error: str, *, free: bool) -> TrialRecord | None:
        """A configuration that cannot be trained. `free`: a sampler's draw that broke a
        constraint, which neither uses budget nor is shown to the method (returns None)."""
        trial.set_user_attr("error", error)
        if free:
            trial.set_user_attr("free", True)
        trial.set_user_attr("outcome", Outcome.INVALID.value)  # last: see `loop._Search.finish`
        logger.info("trial %d invalid: %s", trial.number, error)
        if free:
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        record = TrialRecord(number=trial.number, params=params, outcome=Outcome.INVALID, error=error,
                             user_attrs=method_attrs(trial))
        self.conclude(trial, record)
        return record

    def drop(self, trial: optuna.Trial, why: str) -> None:
        """A trial that must not run (over budget): recorded as free, never shown to the method."""
        trial.set_user_attr("free", True)
        trial.set_user_attr("error", why)
        self.study.tell(trial, state=TrialState.FAIL)
        logger.info("trial %d not run: %s", trial.number, why)

    def conclude(self, trial: optuna.Trial, record: TrialRecord) -> None:
        """Observe a trial whose result is stored, then tell the study (the trial ends here).

        A method error that stops the study (`ObserveIncomplete`) still tells the trial, with
        whatever the method observed; Ctrl-C or a kill leaves it RUNNING with its result stored,
        and the next run observes it again from storage (`redo_observe`), never retraining it.
        """
        try:
            self._observe(trial, record)
        except Exception:
            self._tell(trial, record)
            self.ctx.history.append(record)
            raise
        self._tell(trial, record)
        self.ctx.history.append(record)
        self._after()

    def redo_observe(self) -> list[TrialRecord]:
        """Finish trials a dead process left RUNNING after their result was stored.

        The process was killed in the method's observe step (reflection, memory): the trial
        trained to the end, so it is observed again from the stored result and told, not run
        again. Memory operations are idempotent per trial, so a replayed observe counts the
        evidence once. Returns the records of the trials finished this way.
        """
        done = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            outcome = t.user_attrs.get("outcome")
            if outcome in (None, Outcome.INTERRUPTED.value) or owner_alive(t.user_attrs.get("owner")):
                continue
            trial = optuna.Trial(self.study, t._trial_id)
            trial.set_user_attr("owner", self.owner)  # other resuming processes leave it to us
            record = record_from_trial(t, self.metric)
            logger.info("trial %d: result stored before its process died; observing it again", t.number)
            try:
                self.conclude(trial, record)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another process resuming the study finished it first
            done.append(record)
        return done

    def _tell(self, trial: optuna.Trial, record: TrialRecord) -> None:
        value = record.value
        if record.outcome is Outcome.COMPLETE and value is not None and math.isfinite(value):
            self.study.tell(trial, float(value))
        elif record.outcome is Outcome.PRUNED:
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)
        # The one place models are kept or dropped: a complete trial's model, or that of a trial the
        # compute budget ended (its best epoch's weights: `stored.cut_by_budget`), may become the best.
        if record.outcome is Outcome.PRUNED:
            value = cut_by_budget(trial.user_attrs, self.metric)
        self.keeper.trial_finished(trial.number, value if record.outcome in (Outcome.COMPLETE, Outcome.PRUNED) else None)

    def _observe(self, trial: optuna.Trial, record: TrialRecord) -> dict[str, Any]:
        try:
            extra = self.method.observe(self.ctx, record) or {}
        except ObserveIncomplete as exc:
            for key, value in exc.attrs.items():  # keep what was observed, then stop the study
                if key not in RESERVED_ATTRS:
                    trial.set_user_attr(key, value)
            raise
        except VirtualMLEError as exc:
            logger.warning("method %s could not observe trial %d: %s", self.method.name, record.number, exc)
            extra = {"observe_error": str(exc)}
        for key, value in extra.items():
            if key in RESERVED_ATTRS:
                raise ValueError(f"method {self.method.name!r} may not overwrite user attr {key!r}")
            trial.set_user_attr(key, value)
        return extra
