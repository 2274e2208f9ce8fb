"""Evidence: budget-matched multi-seed comparisons (`virtualmle bench`), the tabular benchmark
(replaying a table of real trials), and the transfer experiment.

- `virtualmle.bench.runner`: `BenchOptions`, `run_bench`, `BenchResult` (read back from storage).
- `virtualmle.bench.table`: `TrialTable` (the CSV of real trials) and `TableExecutor`.
- `virtualmle.bench.transfer`: distil two datasets, tune a third with and without transfer.
- `virtualmle.bench.report` / `plots`: CSV, Markdown, JSON and PNG outputs.
"""

from virtualmle.bench.runner import BenchOptions, BenchResult, RunResult, run_bench
from virtualmle.bench.table import Snap, TableExecutor, TrialTable

__all__ = ["BenchOptions", "BenchResult", "RunResult", "Snap", "TableExecutor", "TrialTable", "run_bench"]
