"""`virtualmle bench`: budget-matched, multi-seed comparisons of search methods.

Each (method, seed) is its own Optuna study, run by the one search loop (`run_search`) through
one executor into one storage, so every method gets the same budget, the same trials and the same
accounting; running the bench again resumes every study. With a trial table (`--table`), the
executor is a `virtualmle.bench.table.TableExecutor` and the space is exactly the table's points,
so dozens of seeds take minutes.

The report is read back from storage (never from memory), so a resumed or re-run bench reports
the same numbers: per method, the best validation metric after n trials (mean and standard error
over seeds), the test metric of the configuration each run chose by validation, the trials and
compute seconds each run needed to reach a target (default 97 % of the best validation value any
run found), snaps to the table, and LLM calls, tokens and cost from each study's LLM call log.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from virtualmle.bench.results import BenchResult, RunResult, read_run
from virtualmle.bench.usage import record_run
from virtualmle.errors import ConfigError

logger = logging.getLogger(__name__)



def _label(method: str, agent_options: dict[str, Any]) -> str:
    """The method's name in storage and reports; agent ablations are methods of their own.

    ``agent-code`` is the agent with every LLM step off (no reflection, no memory, the surrogate's
    top candidate taken without asking the LLM): what its mechanisms alone achieve. The paper's
    ablations: ``agent-norefl`` (no Reflect step), ``agent-nomem`` (no long-term memory: no
    insights, no cognition summary).
    """
    if method != "agent":
        return method
    refl, mem = agent_options.get("reflection") is not False, agent_options.get("memory") is not False
    screen = "-screen" if agent_options.get("screen_epochs") else ""
    if not refl and not mem and agent_options.get("shortlist") == 1:
        return "agent-code" + screen
    return "agent" + ("" if refl else "-norefl") + ("" if mem else "-nomem") + screen


@dataclass
class BenchOptions:
    """What to compare.

    Attributes:
        methods: registered method names.
        data / model: dataset and backbone (taken from the table with ``table``).
        trials: budget per run.
        time_budget: compute seconds per run (None: trials only); methods compare at equal compute.
        seeds: runs per method (seeds ``seed0 .. seed0 + seeds - 1``).
        out: output directory (CSV, Markdown, PNG; default storage and run directories).
        memory: where the agent's memory banks live (one per run; the transfer experiment's source
            and arm banks); default inside ``out``. Keep it beside a journal storage to continue a
            bench on another machine.
        storage: Optuna storage URL (default ``sqlite:///<out>/bench.db``).
        table: a trial table CSV: replay it instead of training.
        table_space: ``grid`` (search exactly the table's points) or ``full`` (the shipped space;
            off-table proposals snap).
        space: a search-space file or preset (``extended``) for real runs; None = the shipped space.
        max_epochs / slice_users: fidelity of real runs.
        workers: trials at once per run.
        target_frac: target = this fraction of the best validation value any run found.
        metric: validation metric.
        llm: the LLM of LLM methods: `LLMOptions`, an ``--llm`` spec, or None (``$VIRTUALMLE_LLM``
            or the embedded model); each run builds its own client in its run directory.
        agent_options: extra options for the agent (e.g. ``{"transfer": "none"}``).
        seed0: first seed.
        device, timeout_per_trial: as in `virtualmle search`.
        executor: a shared executor for real (non-table) runs, e.g. a `RayExecutor` (it outlives
            each run's shutdown); None gives each run its own local executor.
        progress: per-run progress line (rich).
        data_options: how to read the data file (`load_dataset`'s ``fmt``, ``columns``).
    """

    methods: list[str]
    data: str | None = None
    model: str | None = None
    trials: int = 30
    time_budget: float | None = None
    seeds: int = 3
    out: Path = Path("bench-out")
    memory: Path | None = None
    storage: str | None = None
    table: Path | None = None
    table_space: str = "grid"
    space: str | None = None
    max_epochs: int | None = None
    slice_users: int | None = None
    workers: int = 1
    target_frac: float = 0.97
    metric: str = "ndcg@10"
    llm: Any = None
    agent_options: dict[str, Any] = field(default_factory=dict)
    seed0: int = 0
    device: str = "auto"
    timeout_per_trial: float | None = None
    progress: bool = True
    executor: Any = None
    data_options: dict[str, Any] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """An option as JSON-ready data (paths as strings, also inside the LLM options)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return str(value) if isinstance(value, Path) else value


def space_tag(opts: Any) -> str:
    """``-<space file stem>`` for a run with ``--space`` (its studies are others), else ``""``."""
    return f"-{Path(opts.space).stem}" if getattr(opts, "space", None) else ""


def study_name(method: str, seed: int, *, data: str, model: str, table: bool) -> str:
    """``bench-<data>-<model>-<method>-s<seed>`` (``bench-table-...`` when replaying a table)."""
    return f"bench-{'table-' if table else ''}{data}-{model}-{method}-s{seed}"


def split_method(name: str) -> tuple[str, str | None]:
    """``tpe+hyperband`` -> (``tpe``, ``hyperband``): a method with an Optuna pruner on its trials."""
    base, _, pruner = name.partition("+")
    return base, (pruner or None)


def check_methods(names: list[str]) -> list[str]:
    """The method names, validated against the registry before any work.

    A name may carry a pruner: ``tpe+hyperband``, ``random+sha``, ``tpe+median``.

    Raises:
        ConfigError: an empty list, a duplicate or an unknown name.
    """
    from virtualmle.methods import method_names
    from virtualmle.search.budget import PRUNERS

    known = method_names()
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ConfigError("--methods: name at least one method")
    for n in names:
        base, pruner = split_method(n)
        if base not in known:
            raise ConfigError(f"--methods: unknown method {base!r}: use one of {', '.join(known)}")
        if pruner is not None and pruner not in PRUNERS:
            raise ConfigError(f"--methods {n!r}: unknown pruner {pruner!r}: use one of {', '.join(PRUNERS)}")
    if len(set(names)) != len(names):
        raise ConfigError("--methods: a method is listed twice")
    return names


def make_method(name: str, space: Any, seed: int, opts: BenchOptions, memory_dir: Path) -> Any:
    """Build a method for one run; LLM methods get the bench's LLM, the agent its own memory
    bank per run (so seeds never learn from each other) and transfer off unless asked."""
    from virtualmle.methods import LLM_METHODS, get_method

    extra: dict[str, Any] = {}
    if name in LLM_METHODS:
        extra["llm"] = opts.llm
    if name == "agent":
        extra.update({"memory_dir": memory_dir, "transfer": "none", "display": False})
        extra.update(opts.agent_options)
    return get_method(name, space=space, seed=seed, **extra)


@dataclass
class Target:
    """What a bench (or the transfer experiment's target) runs on: a trial table's dataset,
    backbone, fidelity and space, or the options' own when there is no table."""

    table: Any  # TrialTable or None
    data: str
    model: str
    slice_users: int | None
    max_epochs: int | None
    space: Any


def resolve_target(opts: Any, *, table_space: str = "grid", data_label: str = "--data") -> Target:
    """Load ``opts.table`` (checking ``opts.data`` against it) or take ``opts.data`` / ``opts.model``
    and the fidelity from the options. ``table_space="full"`` searches the shipped space of the
    table's backbone instead of the table's own axes."""
    from virtualmle.search.space import load_space

    if opts.table is not None:
        from virtualmle.bench.table import TrialTable

        table = TrialTable.load(opts.table)
        if opts.data is not None and opts.data != table.dataset:
            raise ConfigError(f"--data {opts.data!r} does not match the table {opts.table} ({table.dataset!r})")
        if getattr(opts, "space", None):
            raise ConfigError("--space cannot be used with --table: the table's points are the space "
                              "(--table-space full searches the shipped space)")
        space = _table_space(table) if table_space == "grid" else load_space(table.backbone)
        return Target(table, table.dataset, table.backbone, table.fidelity.get("slice_users"),
                      table.fidelity.get("max_epochs"), space)
    if not opts.data:
        raise ConfigError(f"{data_label} is required without --table")
    model = opts.model or "sasrec"
    return Target(None, opts.data, model, opts.slice_users, opts.max_epochs,
                  load_space(model, getattr(opts, "space", None)))


def _table_space(table: Any) -> Any:
    from virtualmle.search.space import load_space, parse_space

    shipped = load_space(table.backbone)
    doc = table.space_yaml(shipped.defaults())
    # Keep the shipped constraints that the table's parameters can still break.
    names = set(doc["params"]) | set(doc["fixed"])
    doc["constraints"] = [{c.kind: [c.left, c.right]} for c in shipped.constraints
                          if c.left in names and c.right in names]
    return parse_space(doc, source=f"table {table.path.name}")


def run_bench(opts: BenchOptions, *, on_run: Callable[[str, int, int, int], None] | None = None) -> BenchResult:
    """Run (or resume) every (method, seed) study, then read them back and write the report.

    Args:
        opts: what to compare.
        on_run: called as ``on_run(method, seed, index, total)`` before each run (progress).

    Raises:
        ConfigError: bad options or method names (before any work).
        StorageError / DataError: as `run_search` and `TrialTable.load`.
    """
    import optuna

    from virtualmle.search.loop import SearchOptions, run_search
    from virtualmle.search.storage import open_storage

    methods = check_methods(opts.methods)
    if opts.trials < 1:
        raise ConfigError(f"--trials must be >= 1 (got {opts.trials})")
    if opts.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1 (got {opts.seeds})")
    if opts.workers < 1:
        raise ConfigError(f"--workers must be >= 1 (got {opts.workers})")
    if not (0.0 < opts.target_frac <= 1.0):
        raise ConfigError(f"--target-frac must be in (0, 1] (got {opts.target_frac})")
    if opts.table_space not in ("grid", "full"):
        raise ConfigError(f"--table-space must be grid or full (got {opts.table_space!r})")
    target = resolve_target(opts, table_space=opts.table_space)
    table = target.table
    if table is not None:
        if opts.model is not None and opts.model != table.backbone:
            raise ConfigError(f"--model {opts.model!r} does not match the table {opts.table} ({table.backbone!r})")
        if opts.max_epochs is not None or opts.slice_users is not None:
            raise ConfigError("--max-epochs / --slice-users: the table fixes the fidelity; leave them out with --table")
        if opts.metric != table.metric:
            raise ConfigError(f"--metric {opts.metric!r}: the table {opts.table} was built for {table.metric!r}")
    data, model, slice_users, max_epochs, space = (target.data, target.model, target.slice_users,
                                                   target.max_epochs, target.space)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    storage_url = opts.storage or f"sqlite:///{(out / 'bench.db').resolve()}"
    from virtualmle.data import load_dataset

    # The data before the storage: a bad dataset fails fast and leaves no empty database.
    data_name = load_dataset(data, slice_users=slice_users, **opts.data_options).name
    storage = open_storage(storage_url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)

    jobs = [(m, opts.seed0 + k) for k in range(opts.seeds) for m in methods]
    runs: list[RunResult] = []
    for i, (m, seed) in enumerate(jobs):
        # An agent ablation is another method as far as storage and the report are concerned.
        label = _label(m, opts.agent_options)
        # Another space is another study: bench-beauty-sasrec-extended-agent-s0 for --space extended.
        model_tag = model + space_tag(opts)
        name = study_name(label, seed, data=data_name, model=model_tag, table=table is not None)
        run_dir = (out / "runs" / name).resolve()
        if on_run is not None:
            on_run(m, seed, i, len(jobs))
        base, pruner = split_method(m)
        method = make_method(base, space, seed, opts,
                             (opts.memory / name).resolve() if opts.memory else run_dir / "memory")
        executor = opts.executor
        if table is not None:
            from virtualmle.bench.table import TableExecutor

            executor = TableExecutor(table, workers=opts.workers)
        so = SearchOptions(data=data, model=model, trials=opts.trials, seed=seed, metric=opts.metric,
                           study_name=name, space=space, max_epochs=max_epochs, slice_users=slice_users,
                           timeout_per_trial=opts.timeout_per_trial, run_dir=run_dir, device=opts.device,
                           workers=opts.workers, progress=False, data_options=dict(opts.data_options),
                           keep_models=0,  # a bench compares methods; it keeps no models
                           prune=pruner, time_budget=opts.time_budget)
        t0 = time.monotonic()
        summary = run_search(method, so, executor=executor, storage=storage)
        wall = time.monotonic() - t0
        study = optuna.load_study(study_name=name, storage=storage)
        record_run(study, run_dir, wall)
        study.set_user_attr("bench", {"methods": methods, "trials": opts.trials, "table": str(opts.table or "")})
        runs.append(read_run(study, label, seed, run_dir, table))
        logger.info("bench run %s: best %s after %d trials", name, summary.best_value, summary.trials_used)

    best_any = max((r.best_value for r in runs if r.best_value is not None), default=None)
    target = best_any * opts.target_frac if best_any is not None else None
    result = BenchResult(
        options={**{k: _plain(v) for k, v in asdict(opts).items()},
                 "data": data_name, "model": model, "slice_users": slice_users, "max_epochs": max_epochs,
                 "storage": storage_url, "methods": methods},
        runs=runs, target=target, best_any=best_any,
        table_best=(table.best.valid.get(table.metric) if table is not None and table.best else None),
    )
    from virtualmle.bench.report import write_report

    result.files = write_report(result, out)
    return result


__all__ = ["BenchOptions", "BenchResult", "RunResult", "check_methods", "read_run", "run_bench",
           "study_name"]
