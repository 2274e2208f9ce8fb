"""The search's progress display: trial i of N, best validation so far, compute left.

Not on a terminal (a log file, a pipe), the bar is left out and each trial is one whole line with
the best so far: a bar rendered into a file is cut mid-field at the console width.
"""

from __future__ import annotations

from virtualmle.records import Outcome, TrialRecord
from virtualmle.search.budget import ComputeBudget, format_duration
from virtualmle.search.method import SearchContext


class Display:
    """rich progress: trial i of N (or compute spent of the time budget), best validation so far."""

    def __init__(self, ctx: SearchContext, study: str, method: str, compute: ComputeBudget | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.metric = ctx.metric
        self.compute = compute if compute is not None and compute.seconds is not None else None
        console = Console()
        self.lines_only = not console.is_terminal
        self.progress = Progress(
            TextColumn(f"[bold]{method}[/] {{task.description}}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("best {task.fields[best]}"),
            TextColumn("{task.fields[compute]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            disable=self.lines_only,
        )
        inc = ctx.incumbent
        self.task = self.progress.add_task(study, total=ctx.budget, completed=ctx.trials_used,
                                           best=self._best(inc), compute=self._compute())
        self.progress.start()

    def _best(self, rec: TrialRecord | None) -> str:
        return f"{self.metric} {rec.value:.5f} (#{rec.number})" if rec and rec.value is not None else "-"

    def _compute(self) -> str:
        """``compute 12m30s of 45m00s`` under a time budget, else empty."""
        if self.compute is None:
            return ""
        return f"compute {format_duration(self.compute.spent)} of {format_duration(self.compute.seconds)}"

    def started(self, number: int, running: int) -> None:
        self.progress.update(self.task, description=f"running #{number} ({running} at once)")

    def finished(self, rec: TrialRecord, ctx: SearchContext) -> None:
        value = f"{rec.value:.5f}" if rec.value is not None else "-"
        note = f"  {rec.error[:90]}" if rec.error and rec.outcome is not Outcome.COMPLETE else ""
        line = f"trial {rec.number:4d}  {rec.outcome.value:<9} {self.metric} {value}  {rec.seconds:6.1f}s{note}"
        if self.lines_only:
            spent = f", {self._compute()}" if self.compute is not None else ""
            line += f"  ({ctx.trials_used}/{ctx.budget}{spent}, best {self._best(ctx.incumbent)})"
        self.progress.console.print(line, soft_wrap=True, highlight=False, markup=False)
        self.progress.update(self.task, completed=ctx.trials_used, best=self._best(ctx.incumbent),
                             compute=self._compute())

    def close(self) -> None:
        self.progress.stop()
