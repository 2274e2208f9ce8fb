"""Evidence: budget-matched multi-seed comparisons (`virtualmle bench`), the tabular benchmark
(replaying a table of real trials), and the transfer experiment.

- `virtualmle.bench.runner`: `BenchOptions`, `run_bench`.
- `virtualmle.bench.results`: `RunResult`, `BenchResult` (read back from storage, `read_run`).
- `virtualmle.bench.usage`: a run's wall time and LLM usage, kept in its study.
- `virtualmle.bench.table`: `TrialTable` (the CSV of real trials) and `TableExecutor`;
  `table_export`: a table built from a grid study.
- `virtualmle.bench.transfer`: distil two datasets, tune a third with and without transfer.
- `virtualmle.bench.report` / `plots`: CSV, Markdown, JSON and PNG outputs.
"""

from virtualmle.bench.results import BenchResult, RunResult
from virtualmle.bench.runner import BenchOptions, run_bench
from virtualmle.bench.table import Snap, TableExecutor, TrialTable

__all__ = ["BenchOptions", "BenchResult", "RunResult", "Snap", "TableExecutor", "TrialTable", "run_bench"]
