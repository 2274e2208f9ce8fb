"""The options `search`, `tune` and `bench` share, declared once, and what they become.

    add_run_options(p)      # --model --trials --seed --workers --metric --max-epochs --slice-users
                            # --timeout-per-trial --device --storage --quiet, the LLM, executor and data groups
    add_study_options(p)    # search and tune: --data --study --space --run-dir --prune --set --json --keep-models
    check_run_options(args) # one-line ConfigError before any work (unknown backbone or metric, ...)
    llm_options(args)       # the --llm* options as `LLMOptions` for the agent and OPRO
    search_options(args, space, study=...)  # a `SearchOptions` for the one search loop

So the three commands cannot drift: the same names, defaults, checks and help. Anything one
command has alone (bench's --seeds, tune's --mode, search's --method) stays in its own module.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from virtualmle.errors import ConfigError
from virtualmle.search.budget import PRUNERS, format_duration, parse_duration
from virtualmle.search.loop import DEFAULT_TRIALS

UNLIMITED_TRIALS = 1_000_000  # the trial budget of a study bounded by --budget alone

BACKBONES = ("sasrec", "hstu")
STORAGE_HELP = ("Optuna storage URL: sqlite:///FILE (default sqlite:///virtualmle.db), postgresql://..., "
                "journal:///FILE")


def add_run_options(p: argparse.ArgumentParser, *, model_default: str | None = "sasrec",
                    storage_help: str = STORAGE_HELP,
                    seed_help: str = "study seed: sampler, grid order, training seed (default 0)") -> None:
    """Options of every command that runs trials (search, tune, bench)."""
    from virtualmle.cli.data_options import add_data_arguments
    from virtualmle.llm.cli_args import add_llm_arguments
    from virtualmle.search.executors import add_executor_arguments

    model_help = model_default or "sasrec, or the table's"
    p.add_argument("--model", default=model_default, metavar="NAME", help=f"backbone: sasrec or hstu (default {model_help})")
    p.add_argument("--trials", type=int, default=None, metavar="N",
                   help=f"budget: trials per study, including those of earlier runs (default {DEFAULT_TRIALS}; "
                        "with --budget alone, no trial limit)")
    p.add_argument("--budget", default=None, metavar="DURATION",
                   help="budget in compute time: 90s, 45m, 2h, 1h30m (training time summed over trials, earlier "
                        "runs included); when spent, no trial starts and running ones stop at their next epoch")
    p.add_argument("--seed", type=int, default=0, metavar="S", help=seed_help)
    p.add_argument("--workers", type=int, default=1, metavar="K",
                   help="trials at once; CPU threads are divided among them and GPUs assigned round-robin (default 1)")
    p.add_argument("--metric", default="ndcg@10", metavar="NAME", help="validation metric to maximise (default ndcg@10)")
    p.add_argument("--max-epochs", type=int, default=None, metavar="E", help="fidelity: cap every trial's epochs")
    p.add_argument("--slice-users", type=int, default=None, metavar="N", help="fidelity: train every trial on the first N users")
    p.add_argument("--timeout-per-trial", type=float, default=None, metavar="S",
                   help="kill a trial after S seconds and record it as timeout")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where trials train (default auto)")
    p.add_argument("--storage", default=None, metavar="URL", help=storage_help)
    p.add_argument("--quiet", action="store_true", help="no progress display")
    add_llm_arguments(p)
    add_executor_arguments(p)
    add_data_arguments(p)


def add_study_options(p: argparse.ArgumentParser, *, study_help: str) -> None:
    """Options of the commands that run one study (search, tune)."""
    p.add_argument("--data", required=True, metavar="NAME_OR_PATH",
                   help="dataset name (beauty, baby, pet_supplies, sports, toys) or a file path")
    p.add_argument("--study", default=None, metavar="NAME", help=study_help)
    p.add_argument("--space", default=None, metavar="FILE", help="your own search-space YAML (default: the shipped space of --model)")
    p.add_argument("--run-dir", default=None, metavar="DIR",
                   help="per-trial files, the kept models and the LLM call log llm_log.jsonl (default runs/<study>)")
    p.add_argument("--prune", nargs="?", const="median", default=None, choices=PRUNERS, metavar="KIND",
                   help="stop unpromising trials early on per-epoch validation with Optuna's pruners: median "
                        "(the default KIND), sha (successive halving) or hyperband")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                   help="hold a parameter that is not searched at a value in every trial (repeatable), "
                        "e.g. --set patience=2")
    p.add_argument("--json", dest="json_out", default=None, metavar="FILE", help="also write the summary as JSON")
    p.add_argument("--keep-models", type=int, default=1, metavar="K",
                   help="keep the K best trials' models: the best in <run-dir>/best_model, the rest in "
                        "<run-dir>/models (default 1; 0: none)")


def check_run_options(args: argparse.Namespace) -> None:
    """Refuse what would spend a budget for nothing, before any work, and resolve the budget:
    sets ``args.time_budget`` (seconds, from ``--budget``) and ``args.trials`` when it was not given.

    Raises:
        ConfigError: an unknown backbone or metric, a bad duration, fewer than one trial or worker.
    """
    from virtualmle.training import TrainConfig

    if args.model is not None and args.model not in BACKBONES:
        raise ConfigError(f"unknown backbone {args.model!r}: use one of {', '.join(BACKBONES)}")
    metrics = TrainConfig.model_fields["metric"].annotation.__args__
    if args.metric not in metrics:
        raise ConfigError(f"unknown metric {args.metric!r}: use one of {', '.join(metrics)}")
    args.time_budget = parse_duration(args.budget) if args.budget is not None else None
    if args.trials is None:  # a time budget alone runs as many trials as fit
        args.trials = UNLIMITED_TRIALS if args.time_budget is not None else DEFAULT_TRIALS
    if args.trials < 1:
        raise ConfigError(f"--trials must be >= 1 (got {args.trials})")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1 (got {args.workers})")


def fixed_params(sets: list[str], space: Any) -> dict[str, Any]:
    """``--set NAME=VALUE`` items as typed parameters held in every trial.

    Raises:
        ConfigError: an item without ``=``, an unknown name, a searched parameter, or a name that
            has its own option.
    """
    from virtualmle.training import coerce_params

    raw = {}
    for item in sets:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected NAME=VALUE")
        raw[name.strip()] = value
    fixed = coerce_params(raw)
    for name in fixed:
        if name in space.params:
            raise ConfigError(f"--set {name}: {name!r} is searched in {space.source}; use --space to fix it")
        if name in ("model", "metric", "max_epochs"):
            raise ConfigError(f"--set {name}: use --{name.replace('_', '-')} instead")
    return fixed


def llm_options(args: argparse.Namespace) -> Any:
    """The ``--llm*`` options as `virtualmle.agent.llm_call.LLMOptions` (built lazily by the method)."""
    from virtualmle.agent.llm_call import LLMOptions

    return LLMOptions(spec=args.llm, max_tokens_budget=args.max_llm_tokens, cache_dir=args.llm_cache_dir,
                      timeout_s=args.llm_timeout, n_ctx=args.llm_ctx, n_threads=args.llm_threads)


def search_options(args: argparse.Namespace, space: Any, *, study: str | None) -> Any:
    """The `SearchOptions` of one study from the shared options."""
    from virtualmle.cli.data_options import data_options
    from virtualmle.search.loop import SearchOptions

    return SearchOptions(
        data=args.data, model=args.model, trials=args.trials, seed=args.seed, metric=args.metric,
        study_name=study, space=space, max_epochs=args.max_epochs, slice_users=args.slice_users,
        timeout_per_trial=args.timeout_per_trial, prune=args.prune, time_budget=args.time_budget,
        run_dir=Path(args.run_dir) if args.run_dir else None, device=args.device,
        workers=args.workers, fixed=fixed_params(args.sets, space), progress=not args.quiet,
        data_options=data_options(args), keep_models=args.keep_models,
    )


def print_summary(s: Any) -> None:
    """The end of a search on the console: budget, outcomes, the best trial's metrics."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(s.outcomes.items()))
    trials = f"{s.trials_used} trials" if s.budget >= UNLIMITED_TRIALS else f"{s.trials_used}/{s.budget} trials"
    compute = f"compute {format_duration(s.compute_seconds)}"
    if s.time_budget is not None:
        compute += f" of {format_duration(s.time_budget)}"
    console.print(
        f"[bold]{s.study_name}[/]: {trials} ({outcomes}); {compute}, wall {format_duration(s.wall_seconds)}"
        + ("; the method had nothing left to propose" if s.exhausted else "")
    )
    if s.best_number is None:
        console.print("no trial completed")
        return
    table = Table(title=f"best trial #{s.best_number} ({s.metric} on validation {s.best_value:.6f})")
    table.add_column("metric")
    table.add_column("validation", justify="right")
    table.add_column("test (reported, never used to choose)", justify="right")
    for name in s.best_valid:
        table.add_row(name, f"{s.best_valid[name]:.6f}", f"{s.best_test.get(name, float('nan')):.6f}")
    console.print(table)
    console.print("configuration: " + " ".join(f"{k}={v}" for k, v in s.best_params.items()))
    if s.best_model:
        console.print(f"best model: {s.best_model}  (virtualmle recommend --model {s.best_model} ...)", highlight=False)
