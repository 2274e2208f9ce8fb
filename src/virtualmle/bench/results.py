"""What a bench measured, read back from storage: one `RunResult` per (method, seed) study, and
the `BenchResult` that aggregates them per method (mean and standard error over seeds, trials and
compute to reach the target, LLM usage).

Everything here is computed from the stored studies (`read_run`), never from a run's memory, so
a resumed or re-run bench reports the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtualmle.bench import stats
from virtualmle.bench.usage import stored_llm_usage

__all__ = ["BenchResult", "RunResult", "read_run"]


@dataclass
class RunResult:
    """One (method, seed) study, read back from storage."""

    method: str
    seed: int
    study: str
    trials: int
    values: list[float | None]  # validation metric per counted trial, in trial order (None: failed)
    seconds: list[float]  # seconds per counted trial
    best_value: float | None
    best_test: dict[str, float]
    best_params: dict[str, Any]
    outcomes: dict[str, int]
    snaps: int | None = None  # table mode: trials answered by a snapped lookup
    llm: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0
    run_dir: str = ""

    def best_curve(self) -> list[float | None]:
        """Best validation value after 1..n trials (None until a trial completes)."""
        out, best = [], None
        for v in self.values:
            if v is not None and math.isfinite(v) and (best is None or v > best):
                best = v
            out.append(best)
        return out

    def to_reach(self, target: float) -> tuple[int | None, float | None]:
        """Trials and cumulative compute seconds until the best value first reaches ``target``."""
        total = 0.0
        for i, (v, s) in enumerate(zip(self.values, self.seconds)):
            total += s
            if v is not None and v >= target:
                return i + 1, total
        return None, None


@dataclass
class BenchResult:
    """Every run of a bench plus the target it is measured against."""

    options: dict[str, Any]
    runs: list[RunResult]
    target: float | None
    best_any: float | None
    table_best: float | None = None
    files: dict[str, str] = field(default_factory=dict)

    def methods(self) -> list[str]:
        seen: list[str] = []
        for r in self.runs:
            if r.method not in seen:
                seen.append(r.method)
        return seen

    def summary(self) -> list[dict[str, Any]]:
        """Per-method rows: the numbers of the Markdown table."""
        rows = []
        for m in self.methods():
            runs = [r for r in self.runs if r.method == m]
            metric = self.options.get("metric", "ndcg@10")
            bests = [r.best_value for r in runs if r.best_value is not None]
            tests = [r.best_test.get(metric) for r in runs if r.best_test.get(metric) is not None]
            reach = [r.to_reach(self.target) if self.target is not None else (None, None) for r in runs]
            trials_to = [t for t, _ in reach if t is not None]
            secs_to = [s for _, s in reach if s is not None]
            snaps = [r.snaps for r in runs if r.snaps is not None]
            ntrials = sum(r.trials for r in runs)
            row = {
                "method": m,
                "runs": len(runs),
                "trials": ntrials / max(1, len(runs)),
                "best_valid_mean": stats.mean(bests), "best_valid_se": stats.se(bests),
                "test_of_best_mean": stats.mean(tests), "test_of_best_se": stats.se(tests),
                "reached": len(trials_to),
                "trials_to_target_mean": stats.mean(trials_to), "trials_to_target_median": stats.median(trials_to),
                "seconds_to_target_mean": stats.mean(secs_to),
                "compute_seconds_mean": stats.mean([sum(r.seconds) for r in runs]),
                "snap_rate": (sum(snaps) / ntrials) if snaps and ntrials else None,
                "llm_calls": sum(int(r.llm.get("calls", 0)) for r in runs) / max(1, len(runs)),
                "llm_tokens": sum(int(r.llm.get("tokens", 0)) for r in runs) / max(1, len(runs)),
                "llm_cost_usd": sum(float(r.llm.get("cost_usd", 0.0)) for r in runs) / max(1, len(runs)),
                "llm_seconds": sum(float(r.llm.get("seconds", 0.0)) for r in runs) / max(1, len(runs)),
                "wall_seconds_mean": stats.mean([r.wall_seconds for r in runs]),
            }
            rows.append(row)
        return rows

    def curves(self) -> dict[str, dict[str, list[float | None]]]:
        """Method -> ``mean`` / ``se`` of the best-so-far validation value per trial count."""
        out: dict[str, dict[str, list[float | None]]] = {}
        for m in self.methods():
            runs = [r.best_curve() for r in self.runs if r.method == m]
            n = max((len(c) for c in runs), default=0)
            mean, se = [], []
            for i in range(n):
                # A run that stopped early (grid exhausted) keeps its last best value.
                col = [c[min(i, len(c) - 1)] for c in runs if c and c[min(i, len(c) - 1)] is not None]
                mean.append(stats.mean(col))
                se.append(stats.se(col))
            out[m] = {"mean": mean, "se": se}
        return out


def read_run(study: Any, method: str, seed: int, run_dir: Path, table: Any = None) -> RunResult:
    """A stored study as a `RunResult` (counted trials in trial-number order)."""
    from virtualmle.search.stored import choice_value, counts, summarize

    trials = sorted((t for t in study.get_trials(deepcopy=False) if counts(t)), key=lambda t: t.number)
    metric = study.user_attrs.get("metric", "ndcg@10")
    values: list[float | None] = []
    seconds: list[float] = []
    snaps = 0
    for t in trials:
        values.append(choice_value(t, metric))
        seconds.append(float(t.user_attrs.get("seconds") or 0.0))
        if table is not None and t.user_attrs.get("outcome") != "invalid":
            params = {**t.params, **t.user_attrs.get("extra_params", {})}
            if table.lookup(params).snapped:
                snaps += 1
    s = summarize(study, method, metric, len(trials))
    return RunResult(
        method=method, seed=seed, study=study.study_name, trials=len(trials), values=values,
        seconds=seconds, best_value=s.best_value, best_test=s.best_test, best_params=s.best_params,
        outcomes=s.outcomes, snaps=snaps if table is not None else None, llm=stored_llm_usage(study, run_dir),
        wall_seconds=float(study.user_attrs.get("bench_wall_seconds", 0.0)), run_dir=str(run_dir),
    )
