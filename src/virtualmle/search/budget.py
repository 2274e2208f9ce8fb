"""What a study may spend: trials, compute time, and how hopeless trials are stopped.

    parse_duration("45m") -> 2700.0      # --budget: 90s, 45m, 2h, 1h30m, or plain seconds
    ComputeBudget(seconds)               # compute spent, read from storage, plus running trials
    make_pruner("hyperband", max_epochs) # --prune median | sha | hyperband (None: no pruning)

Compute is training time summed over trials (two workers spend it twice as fast as one): a
finished trial's ``seconds`` (stored, so a resumed study or another process on the same study
counts it) and, for a running trial, its epoch seconds so far or the time since it started,
whichever is more (a trial whose first epoch takes half an hour spends from its start, not from
its first validation). On a replayed table the trials' recorded seconds count, so methods
compare at equal compute there too.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial

from virtualmle.errors import ConfigError

PRUNERS = ("median", "sha", "hyperband")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)([smhd]))+$")


def parse_duration(text: str) -> float:
    """Seconds of ``90``, ``90s``, ``45m``, ``2h``, ``1h30m``; a ConfigError names a bad value."""
    raw = str(text).strip().lower()
    try:
        seconds = float(raw)
    except ValueError:
        if not _DURATION.match(raw):
            raise ConfigError(f"--budget {text!r}: expected a duration like 90s, 45m, 2h or 1h30m") from None
        seconds = sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smhd])", raw))
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"--budget {text!r}: must be a positive duration")
    return seconds


def format_duration(seconds: float) -> str:
    """``1h05m``, ``12m30s``, ``45s``: for progress lines and summaries."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def make_pruner(kind: str | bool | None, max_epochs: int | None) -> optuna.pruners.BasePruner:
    """The Optuna pruner for ``--prune KIND`` on per-epoch validation (epochs are the resource).

    ``sha`` and ``hyperband`` start at one epoch and keep a third at each rung (Optuna's
    defaults); hyperband's largest bracket ends at the epoch cap when there is one. ``True``
    means ``median`` (the option's earlier form).
    """
    if kind is True:
        kind = "median"
    if not kind:
        return optuna.pruners.NopPruner()
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if kind == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs or "auto",
                                              reduction_factor=3)
    raise ConfigError(f"--prune {kind!r}: use one of {', '.join(PRUNERS)}")


@dataclass
class ComputeBudget:
    """Compute seconds a study may spend; None: no limit (the trial budget alone)."""

    seconds: float | None
    running: dict[int, float] = field(default_factory=dict)  # trial number -> epoch seconds so far
    finished: float = 0.0  # stored seconds of the study's finished trials (all processes)
    started: dict[int, float] = field(default_factory=dict)  # running trial -> time.monotonic() at start

    def refresh(self, trials: list[FrozenTrial], counts: Callable[[FrozenTrial], bool]) -> None:
        """Re-read what finished trials spent, from storage (`counts`: the trials that count)."""
        self.finished = sum(float(t.user_attrs.get("seconds") or 0.0) for t in trials if counts(t))

    def epoch(self, number: int, seconds: float) -> None:
        self.running[number] = self.running.get(number, 0.0) + max(0.0, float(seconds or 0.0))

    def start(self, number: int) -> None:
        self.started[number] = time.monotonic()

    def finish(self, number: int) -> None:
        """From now on the trial's stored seconds count (`refresh`)."""
        self.running.pop(number, None)
        self.started.pop(number, None)

    def epoch_seconds(self, number: int) -> float:
        """What a running trial's validated epochs took (their logs' seconds; start-up excluded)."""
        return self.running.get(number, 0.0)

    def trial_seconds(self, number: int, now: float | None = None) -> float:
        """What a running trial has spent so far: its epochs' seconds, or its wall time if more."""
        now = time.monotonic() if now is None else now
        return max(self.running.get(number, 0.0), now - self.started.get(number, now))

    @property
    def spent(self) -> float:
        now = time.monotonic()
        return self.finished + sum(self.trial_seconds(n, now) for n in set(self.running) | set(self.started))

    @property
    def left(self) -> float | None:
        return None if self.seconds is None else self.seconds - self.spent

    def used_up(self) -> bool:
        return self.seconds is not None and self.spent >= self.seconds
