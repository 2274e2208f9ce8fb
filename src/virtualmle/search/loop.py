"""The one search loop: a method proposes, the executor runs, the Optuna study records.

Every method (grid, random, tpe, default, opro, agent) goes through `run_search`, so all of them
use the same executor, the same storage and the same budget accounting.

Per trial the study stores: the params (Optuna params; parameters outside the space, or values a
categorical does not allow, in the user attr ``extra_params``), the validation metric after every
epoch as intermediate values, and user attrs ``outcome``, ``valid``, ``test`` (never used for
decisions), ``seconds``, ``num_params``, ``best_epoch``, ``stopped``, ``epochs``, ``error`` /
``traceback`` when it failed, ``owner`` (the search process) and whatever the method adds.
The Optuna state is COMPLETE, PRUNED or FAIL; the value is the validation metric.

Resume: running the same search again loads the study, marks trials a dead process left RUNNING as
FAIL with ``outcome=interrupted``, runs those configurations again first, and continues until the
budget (trials that did not end ``interrupted``) is used.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from virtualmle.errors import ConfigError
from virtualmle.records import Outcome
from virtualmle.search.budget import ComputeBudget
from virtualmle.search.conclude import TrialCloser
from virtualmle.search.display import Display
from virtualmle.search.executor import LocalExecutor, TrialExecutor, TrialOutcome
from virtualmle.search.method import Method, Proposal, SearchContext, end_study, sampler_for
from virtualmle.search.model_keeper import ModelKeeper
from virtualmle.search.options import DEFAULT_TRIALS, SearchOptions, SearchSummary
from virtualmle.search.recording import (
    distributions_for,
    fidelity_attrs,
    record_for,
    result_attrs,
    store_result,
)
from virtualmle.search.space import SearchSpace, load_space
from virtualmle.search.stopping import Running, Stopper
from virtualmle.search.storage import owner_info, recover_interrupted
from virtualmle.search.stored import (
    RESERVED_ATTRS,
    counts,
    holds_budget,
    method_attrs,
    record_from_trial,
    same_owner,
    summarize,
)
from virtualmle.search.study_open import open_study
from virtualmle.search.trial_setup import CHECKPOINT, prepare_trial
from virtualmle.search.worker import STOP_FILE

logger = logging.getLogger(__name__)

# Re-exported: callers import the loop's vocabulary from here.
__all__ = ["CHECKPOINT", "DEFAULT_TRIALS", "SearchOptions", "SearchSummary", "record_from_trial", "run_search", "summarize"]

# A sampler draw that breaks a constraint is drawn again up to this many times in a row.
MAX_REDRAWS = 100
POLL_S = 5.0  # with a time budget or a watching method, how often running trials are looked at


class _Search:
    """State of one `run_search` call."""

    def __init__(self, method: Method, opts: SearchOptions, executor: TrialExecutor, study: optuna.Study,
                 space: SearchSpace, ctx: SearchContext, run_dir: Path) -> None:
        self.method, self.opts, self.executor, self.study = method, opts, executor, study
        self.space, self.ctx, self.run_dir = space, ctx, run_dir
        self.owner = owner_info()
        self.running: dict[Future[TrialOutcome], Running] = {}
        self.reruns: list[Proposal] = []
        self.exhausted = False
        self.display: Display | None = None
        self.keeper = ModelKeeper(run_dir, opts.keep_models)
        self._others_pending: list[dict[str, Any]] = []
        self.compute = ComputeBudget(opts.time_budget)
        # Who asks a running trial to stop early (budget, method, pruner) and why (search/stopping.py).
        self.stopper = Stopper(method, ctx, self.compute, metric=opts.metric, prune=opts.prune)
        self.closer = TrialCloser(method, ctx, study, self.keeper, opts.metric, self.owner, after=self._sync_pending)

    # -- the study as stored (shared with other processes) -------------------------------------
    def budget_left(self) -> int:
        """Places left in the budget, read from storage: other processes' trials count too."""
        trials = self.study.get_trials(deepcopy=False)
        self.compute.refresh(trials, counts)
        if self.compute.used_up():
            return 0
        held = sum(1 for t in trials if holds_budget(t))
        return self.ctx.budget - held

    def refresh(self) -> None:
        """Let the method see trials other processes on this study finished or are running."""
        known = {r.number for r in self.ctx.history} | {r.trial.number for r in self.running.values()}
        others: list[dict[str, Any]] = []
        done = []
        for t in self.study.get_trials(deepcopy=False):
            if t.number in known:
                continue
            if t.state == TrialState.RUNNING and holds_budget(t):
                others.append({**t.params, **t.user_attrs.get("extra_params", {})})
            elif counts(t):
                done.append(t)
        done.sort(key=lambda t: (t.datetime_complete or t.datetime_start, t.number))
        self.ctx.history.extend(record_from_trial(t, self.ctx.metric) for t in done)
        self._others_pending = others
        self._sync_pending()

    def _within_budget(self, trial: optuna.Trial) -> bool:
        """After ``ask``: whether this trial got a place in the budget.

        Trial numbers are handed out by the storage in order, so the trials before this one
        decide; a trial that came too late (another process took the last place) is dropped.
        """
        before = sum(1 for t in self.study.get_trials(deepcopy=False)
                     if t.number < trial.number and holds_budget(t))
        return before < self.ctx.budget

    def _duplicate_of_other(self, trial: optuna.Trial, params: dict[str, Any]) -> bool:
        """A sampler draw equal to a trial another process holds (same seed, same history)."""
        for t in self.study.get_trials(deepcopy=False):
            if t.number == trial.number or not holds_budget(t):
                continue
            if same_owner(t.user_attrs.get("owner"), self.owner):
                continue
            if {**t.params, **t.user_attrs.get("extra_params", {})} == params:
                return True
        return False

    # -- proposing --------------------------------------------------------------------------
    def next_proposals(self, k: int) -> list[Proposal]:
        out = self.reruns[:k]
        del self.reruns[:k]
        k -= len(out)
        if k <= 0 or self.exhausted:
            return out
        batch = getattr(self.method, "propose_batch", None)
        if batch is not None and k > 1:
            got = list(batch(self.ctx, k))[:k]
            if not got:
                self.exhausted = True
            return out + got
        for _ in range(k):
            p = self.method.propose(self.ctx)
            if p is None:
                self.exhausted = True
                break
            out.append(p)
            # Later proposals of the same batch must see this one as pending (grid, default).
            if p.params is not None:
                self.ctx.pending.append({**self.space.defaults(), **p.params})
        # pending is rebuilt from running trials once they are started
        self._sync_pending()
        return out

    def _sync_pending(self) -> None:
        self.ctx.pending[:] = [r.params for r in self.running.values()] + self._others_pending

    def start(self, proposal: Proposal) -> bool:
        """Ask Optuna for a trial for ``proposal`` and submit it; False if it was invalid."""
        common = {"owner": self.owner, "method": self.method.name}
        if proposal.params is None:
            for _ in range(MAX_REDRAWS):
                trial = self.study.ask(self.space.distributions())
                params = {**trial.params, **trial.user_attrs.get("extra_params", {})}
                bad = self.space.violations(params)
                if not bad and self._duplicate_of_other(trial, params):
                    # Another process on the study seeded its sampler the same way: draw anew.
                    self.study.sampler.reseed_rng()
                    self._invalid(trial, params, "Duplicate: another process runs this draw", free=True)
                    continue
                if not bad:
                    break
                # The sampler's draw broke a constraint: record it (free) and draw again.
                self._invalid(trial, params, f"ConstraintViolation: {bad[0]}", free=True)
            else:
                raise ConfigError(
                    f"search space {self.space.source}: {MAX_REDRAWS} draws in a row broke a constraint"
                )
        else:
            full = {**self.space.defaults(), **proposal.params}
            dists, values, extra = distributions_for(self.space, full)
            attrs = {**proposal.user_attrs, **common, **fidelity_attrs(proposal)}
            if extra:
                attrs["extra_params"] = extra
            self.study.enqueue_trial(values, user_attrs=attrs)
            trial = self.study.ask(dists)
            # The trial's stored content is the truth: a WAITING trial left by an earlier run
            # is popped first and run as it was enqueued.
            params = {**trial.params, **trial.user_attrs.get("extra_params", {})}
        for key, value in {**common, **proposal.user_attrs}.items():
            if key not in trial.user_attrs or key == "owner":
                trial.set_user_attr(key, value)
        if not self._within_budget(trial):
            self.closer.drop(trial, "BudgetUsed: other processes on this study took the last places")
            return False
        prepared = prepare_trial(trial, params, self.opts, self.space, self.run_dir,
                                 report_epochs=self.stopper.streams)
        if prepared.spec is None:
            self._invalid(trial, params, prepared.problem or "invalid", free=False)
            return False
        spec = prepared.spec
        stop_file = Path(spec.trial_dir, STOP_FILE)
        stop_file.unlink(missing_ok=True)  # a request is for this run only
        self.compute.start(trial.number)
        run = Running(trial, params, screen=prepared.screen, max_epochs=int(spec.config.get("max_epochs") or 0),
                      stop_file=stop_file)
        future = self.executor.submit(spec, self.stopper.on_epoch(run))
        self.running[future] = run
        self._sync_pending()
        if self.display:
            self.display.started(trial.number, len(self.running))
        return True

    # -- ending trials (search/conclude.py) ---------------------------------------------------
    def _invalid(self, trial: optuna.Trial, params: dict[str, Any], error: str, *, free: bool) -> None:
        record = self.closer.invalid(trial, params, error, free=free)
        if self.display and record is not None:
            self.display.finished(record, self.ctx)

    def redo_observe(self) -> list[int]:
        """Trials a dead process trained to the end, observed again (`TrialCloser.redo_observe`)."""
        records = self.closer.redo_observe()
        if self.display:
            for record in records:
                self.display.finished(record, self.ctx)
        return [r.number for r in records]

    def finish(self, future: Future[TrialOutcome]) -> None:
        run = self.running.pop(future)
        trial = run.trial
        out = future.result()
        self.compute.finish(trial.number)  # from now on its stored seconds count
        stop = self.stopper.pop(trial.number)
        outcome, attrs, value = result_attrs(out, screen=run.screen, stop=stop, metric=self.opts.metric)
        store_result(trial, attrs)
        record = record_for(trial, run.params, outcome, value, attrs, out)
        if outcome is Outcome.INTERRUPTED:
            # Ctrl-C: leave it for the next run to do again; methods never see it.
            self.study.tell(trial, state=TrialState.FAIL)
            if out.requeue:
                # Lost with its worker or node (Ray executor): run the same configuration again
                # now, as a resume would, with ``rerun_of`` pointing at the lost trial.
                attrs = {**method_attrs(trial), "rerun_of": trial.number}
                self.reruns.append(Proposal(params=dict(run.params), user_attrs=attrs))
            self._sync_pending()
            return
        self.closer.conclude(trial, record)
        logger.info("trial %d %s value=%s (%.1fs)", trial.number, outcome.value, value, out.seconds)
        if self.display:
            self.display.finished(record, self.ctx)

    # -- main loop --------------------------------------------------------------------------
    def loop(self) -> None:
        workers = self.executor.workers
        while True:
            free = workers - len(self.running)
            left = self.budget_left() if free > 0 else 0
            if left > 0 and free > 0 and (self.reruns or not self.exhausted):
                self.refresh()
                for proposal in self.next_proposals(min(left, free)):
                    if self.budget_left() <= 0:
                        break
                    self.start(proposal)
                if not self.running and (self.reruns or not self.exhausted):
                    continue  # every proposal was invalid: ask again (invalid ones used budget)
            if not self.running:
                return
            # With a time budget or a watching method, look again every few seconds: a trial in a
            # long epoch spends compute before its next validation (search/stopping.py).
            timeout = POLL_S if self.stopper.polls else None
            done, _ = wait(list(self.running), timeout=timeout, return_when=FIRST_COMPLETED)
            for future in done:
                self.finish(future)
            self.stopper.poll(list(self.running.values()))

    def interrupt(self) -> None:
        """Ctrl-C: kill running trials and record them as interrupted (re-run on resume)."""
        self.executor.cancel_all()
        for future in list(self.running):
            try:
                future.result(timeout=30)
            except Exception:
                pass
            run = self.running.pop(future)
            try:
                run.trial.set_user_attr("outcome", Outcome.INTERRUPTED.value)
                self.study.tell(run.trial, state=TrialState.FAIL)
            except Exception as exc:  # the next run recovers it from RUNNING anyway
                logger.debug("trial %d: could not mark interrupted: %s", run.trial.number, exc)


def run_search(
    method: Method,
    options: SearchOptions,
    *,
    executor: TrialExecutor | None = None,
    storage: optuna.storages.BaseStorage | str | None = None,
) -> SearchSummary:
    """Run (or resume) a search until its budget is used or the method has nothing left.

    Args:
        method: any `Method` (see `virtualmle.methods.get_method`).
        options: dataset, backbone, budget, fidelity, study name.
        executor: default a `LocalExecutor` with ``options.workers`` workers.
        storage: an Optuna storage or URL (default ``sqlite:///virtualmle.db``).

    Raises:
        StorageError: the storage cannot be opened, or the study exists for another dataset,
            backbone, method or metric.
        ConfigError: an invalid space or option.
    """
    t0 = time.monotonic()
    if options.trials < 1:
        raise ConfigError(f"--trials must be >= 1 (got {options.trials})")
    if options.workers < 1:
        raise ConfigError(f"--workers must be >= 1 (got {options.workers})")
    if options.keep_models < 0:
        raise ConfigError(f"--keep-models must be >= 0 (got {options.keep_models})")
    space = options.space or load_space(options.model)
    if space.model != options.model:
        raise ConfigError(f"search space {space.source}: is for model {space.model!r}, not {options.model!r}")
    opened = open_study(options, method.name, space, storage)
    study, study_name, dataset, profile, run_dir = (opened.study, opened.name, opened.dataset,
                                                    opened.profile, opened.run_dir)
    trials = study.get_trials(deepcopy=False)
    # Reseeding by the number of trials so far: an uninterrupted run is reproducible, and a
    # resumed one does not replay the draws it already made.
    study.sampler = sampler_for(method, options.seed + len(trials), options.workers)
    history = [record_from_trial(t, options.metric) for t in trials if counts(t)]
    ctx = SearchContext(space=space, dataset=dataset, profile=profile, model=options.model,
                        seed=options.seed, metric=options.metric, budget=options.trials,
                        study_name=study_name, run_dir=run_dir, history=history,
                        time_budget=options.time_budget)
    executor = executor or LocalExecutor(options.workers, device=options.device)
    search = _Search(method, options, executor, study, space, ctx, run_dir)
    search.compute.refresh(trials, counts)  # a resumed study has spent some already
    if options.progress:
        search.display = Display(ctx, study_name, method.name, search.compute)
    try:
        # First the trials a killed run had finished training (observe them from storage), then
        # those it had not (run them again first).
        search.redo_observe()
        for t in recover_interrupted(study):
            attrs = {k: v for k, v in t.user_attrs.items() if k not in RESERVED_ATTRS}
            attrs["rerun_of"] = t.number
            search.reruns.append(Proposal(params={**t.params, **t.user_attrs.get("extra_params", {})},
                                          user_attrs=attrs))
        search.loop()
        # The loop returns only when the budget is used or the method is exhausted: the study is
        # over, every trial is recorded, and the method may close it (the agent distils memory).
        end_study(method, ctx)
    except KeyboardInterrupt:
        search.interrupt()
        raise
    finally:
        if search.display:
            search.display.close()
        if executor is not None and hasattr(executor, "shutdown"):
            executor.shutdown()
    summary = summarize(study, method.name, options.metric, options.trials, wall=time.monotonic() - t0,
                        exhausted=search.exhausted)
    best = search.keeper.best()
    summary.best_model = str(best) if best is not None else None
    summary.time_budget = options.time_budget
    return summary
