"""Stopping a running trial early, and who asked: the compute budget, the method, the pruner.

The loop (`search.loop`) keeps a `Running` entry per trial it runs and asks the `Stopper`:

- after each validation (the executor's ``on_epoch`` callback, `Stopper.on_epoch`): the compute
  budget, then the method's ``watch`` hook (`search.method.Method`), then the study's pruner;
- every few seconds in between (`Stopper.poll`): the compute budget and the ``watch`` hook, so a
  trial in a long epoch, or one that validates rarely, is stopped without waiting for its next
  validation. Such a request writes the trial's stop file: its epoch ends after the current batch,
  the model is validated (unless the method gave it up: then the cut epoch is not), and the trial
  ends as pruned (`train(stop_file=...)`). Where the file cannot be written (a remote node), the
  trial stops at its next validation instead.

A trial the method or the pruner stopped is told so (the stop file's text, or the reply to its
validation, is `worker.DISCARD`): it is never the study's choice, so its test split is not scored.
A trial the budget stopped is, a screen included: it may still be the best the study has.

Each request is kept as ``(who, reason)`` and stored with the trial only when it did end early
(`search.recording.result_attrs`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import optuna

from virtualmle.files import write_atomic
from virtualmle.search.budget import ComputeBudget
from virtualmle.search.method import Method, RunningTrial, SearchContext
from virtualmle.search.recording import Stop
from virtualmle.search.worker import DISCARD

logger = logging.getLogger(__name__)


@dataclass
class Running:
    """A trial the loop has submitted and not yet recorded."""

    trial: optuna.Trial
    params: dict[str, Any]
    screen: bool = False  # trains fewer epochs than its configuration says (a proposal's fidelity)
    max_epochs: int = 0  # epochs this run trains at most
    curve: list[float] = field(default_factory=list)  # validation metric per validation so far
    epochs: int = 0  # epochs trained by the last validation
    validated_at: float = 0.0  # compute seconds it had used at its last validation
    stop_file: Path | None = None  # written to ask the trial to stop mid-epoch (`train(stop_file=...)`)

    def view(self, seconds: float, epoch_seconds: float) -> RunningTrial:
        return RunningTrial(number=self.trial.number, params=dict(self.params), curve=tuple(self.curve),
                            epochs=self.epochs, max_epochs=self.max_epochs, seconds=seconds, screen=self.screen,
                            epoch_seconds=epoch_seconds, validated_at=self.validated_at)


class Stopper:
    """Decides, for the loop, when a running trial stops early; remembers who asked and why."""

    def __init__(self, method: Method, ctx: SearchContext, compute: ComputeBudget, *,
                 metric: str, prune: Any) -> None:
        self.ctx, self.compute = ctx, compute
        self.metric, self.prune = metric, prune
        self.watch = getattr(method, "watch", None)
        self.requests: dict[int, Stop] = {}

    @property
    def streams(self) -> bool:
        """Whether trials must report every validation back (something may stop them)."""
        return bool(self.prune) or self.compute.seconds is not None or self.watch is not None

    @property
    def polls(self) -> bool:
        """Whether running trials are looked at between validations (`poll`)."""
        return self.compute.seconds is not None or self.watch is not None

    def pop(self, number: int) -> Stop | None:
        """The request that stopped trial ``number`` (None: it ended on its own), forgotten."""
        return self.requests.pop(number, None)

    def on_epoch(self, run: Running) -> Callable[[dict[str, Any]], bool]:
        """The executor's per-validation callback for ``run``: True asks the trial to stop (kept),
        `DISCARD` to stop and not be kept (`_answer`)."""
        number = run.trial.number

        def callback(log: dict[str, Any]) -> bool | str:
            self.compute.epoch(number, log.get("seconds") or 0.0)
            run.validated_at = self.compute.trial_seconds(number)
            value = (log.get("valid") or {}).get(self.metric)
            ok = value is not None and math.isfinite(value)
            if isinstance(log.get("epoch"), int):
                run.epochs = int(log["epoch"])
            if ok:  # reported first: the epoch the budget ends on is part of the trial's curve
                run.trial.report(float(value), step=run.epochs)
                run.curve.append(float(value))
            if number in self.requests:  # asked between validations (`poll`)
                return self._answer(number)
            if self.compute.used_up():  # the compute budget is spent: keep what this trial has
                self.requests[number] = ("budget", None)
                return True
            if not ok:
                return False
            if self._watched(run):
                return DISCARD
            if self.prune and run.trial.should_prune():
                self.requests[number] = ("pruner", None)
                return DISCARD
            return False

        return callback

    def poll(self, runs: Iterable[Running]) -> None:
        """Between validations: stop every trial when the budget is spent, or one the method's
        ``watch`` gives up on, through its stop file."""
        used_up = self.compute.used_up()
        for run in runs:
            number = run.trial.number
            if number in self.requests:
                continue
            if used_up:
                self.requests[number] = ("budget", None)
            elif not self._watched(run):
                continue
            self._write_stop_file(run)

    def _answer(self, number: int) -> bool | str:
        """How trial ``number``'s stop request reaches it: True (kept: the budget stopped it, so it
        may still be the study's choice) or `DISCARD` (the method or the pruner gave up on it: its
        test split is not scored, its model not saved)."""
        return True if self.requests[number][0] == "budget" else DISCARD

    def _watched(self, run: Running) -> bool:
        """Ask the method's ``watch`` hook; True (and the reason kept) to stop the trial."""
        if self.watch is None:
            return False
        number = run.trial.number
        view = run.view(self.compute.trial_seconds(number), self.compute.epoch_seconds(number))
        reason = self.watch(self.ctx, view)
        if not reason:
            return False
        self.requests[number] = ("method", str(reason)[:500])
        return True

    def _write_stop_file(self, run: Running) -> None:
        if run.stop_file is None:
            return  # no file to write: it stops at its next validation
        try:  # atomic: the trial sees the file with its text or not at all
            write_atomic(run.stop_file, DISCARD if self._answer(run.trial.number) == DISCARD else "budget")
        except OSError as exc:  # a remote node's trial stops at its next validation instead
            logger.debug("trial %d: could not ask it to stop: %s", run.trial.number, exc)
