"""`virtualmle search`: run or resume a search with one method into an Optuna study."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from virtualmle.cli.data_options import add_data_arguments, data_options
from virtualmle.errors import ConfigError
from virtualmle.llm.cli_args import add_llm_arguments
from virtualmle.search.executors import add_executor_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `search` command."""
    p = subparsers.add_parser(
        "search",
        help="search a backbone's configuration with grid / random / tpe / default (or the agent)",
        description=(
            "Run a search: the method proposes configurations, each trial trains in its own\n"
            "process, and every trial is recorded in an Optuna study (params, per-epoch validation\n"
            "metric, validation and test metrics, seconds, outcome). Running the same command again\n"
            "resumes the study up to its budget: trials a killed run left RUNNING are marked\n"
            "interrupted and run again; nothing completed is lost or repeated. Decisions use\n"
            "validation metrics only; test metrics are shown once, for the best trial."
        ),
        epilog=(
            "methods: grid (the space's 3-values-per-axis grid, Grid-729 for the shipped spaces, in a\n"
            "seeded random order), random, tpe (multivariate TPE), default (the default config with\n"
            "seeds 0,1,2,...: the control), and agent / opro when virtualmle.agent is installed.\n\n"
            "examples:\n"
            "  virtualmle search --method tpe --data beauty --model sasrec --trials 30\n"
            "  virtualmle search --method grid --data baby --model hstu --trials 729 --workers 4\n"
            "  virtualmle search --method random --data beauty --trials 20 --max-epochs 3 --slice-users 2000\n"
            "  virtualmle search --method tpe --data beauty --storage journal:///tmp/studies.log --prune\n"
            "  virtualmle search --method tpe --data beauty --workers 8 --executor ray --ray-address head:6379 \\\n"
            "      --storage journal:///shared/studies.log   (trials as Ray tasks; docs/ray.md)\n"
            "browse: optuna-dashboard sqlite:///virtualmle.db   or   virtualmle report --out report/"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--method", required=True, metavar="NAME", help="grid, random, tpe, default (agent, opro with the agent package)")
    p.add_argument("--data", required=True, metavar="NAME_OR_PATH", help="dataset name (beauty, baby, pet_supplies, sports, toys) or a file path")
    p.add_argument("--model", default="sasrec", metavar="NAME", help="backbone: sasrec or hstu (default sasrec)")
    p.add_argument("--trials", type=int, default=30, metavar="N", help="budget: trials in the study, including those of earlier runs (default 30)")
    p.add_argument("--storage", default=None, metavar="URL", help="Optuna storage URL: sqlite:///FILE (default sqlite:///virtualmle.db), postgresql://..., journal:///FILE")
    p.add_argument("--study", default=None, metavar="NAME", help="study name (default <dataset>-<model>-<method>-s<seed>)")
    p.add_argument("--workers", type=int, default=1, metavar="K", help="trials at once; CPU threads are divided among them and GPUs assigned round-robin (default 1)")
    p.add_argument("--timeout-per-trial", type=float, default=None, metavar="S", help="kill a trial after S seconds and record it as timeout")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="study seed: sampler, grid order, training seed (default 0)")
    p.add_argument("--space", default=None, metavar="FILE", help="your own search-space YAML (default: the shipped space of --model)")
    p.add_argument("--max-epochs", type=int, default=None, metavar="E", help="fidelity: cap every trial's epochs")
    p.add_argument("--slice-users", type=int, default=None, metavar="N", help="fidelity: train every trial on the first N users")
    p.add_argument("--metric", default="ndcg@10", metavar="NAME", help="validation metric to maximise (default ndcg@10)")
    p.add_argument("--prune", action="store_true", help="stop unpromising trials early (Optuna MedianPruner on per-epoch validation)")
    p.add_argument("--run-dir", default=None, metavar="DIR", help="per-trial specs and worker logs (default runs/<study>)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where trials train (default auto)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE", help="hold a parameter that is not searched at a value in every trial (repeatable), e.g. --set patience=2")
    p.add_argument("--json", dest="json_out", default=None, metavar="FILE", help="also write the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--keep-models", type=int, default=1, metavar="K",
                   help="keep the K best trials' models: the best in <run-dir>/best_model, the rest in <run-dir>/models (default 1; 0: none)")
    add_executor_arguments(p)
    add_llm_arguments(p)  # used by --method opro
    add_data_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the search and print the summary."""
    import optuna

    from virtualmle.search.executors import close_executor, make_executor
    from virtualmle.search.loop import SearchOptions, run_search
    from virtualmle.search.methods import get_method
    from virtualmle.search.space import load_space
    from virtualmle.search.storage import check_storage
    from virtualmle.training import TrainConfig, coerce_params

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our display reports trials
    logging.getLogger("optuna").setLevel(logging.WARNING)
    if args.model not in ("sasrec", "hstu"):
        raise ConfigError(f"unknown backbone {args.model!r}: use one of sasrec, hstu")
    if args.metric not in TrainConfig.model_fields["metric"].annotation.__args__:
        raise ConfigError(f"unknown metric {args.metric!r}")
    space = load_space(args.model, args.space)
    raw = {}
    for item in args.sets:
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
    llm_opts = {"llm": args.llm, "max_llm_tokens": args.max_llm_tokens} if args.method == "opro" else {}
    method = get_method(args.method, space=space, seed=args.seed, **llm_opts)
    options = SearchOptions(
        data=args.data, model=args.model, trials=args.trials, seed=args.seed, metric=args.metric,
        study_name=args.study, space=space, max_epochs=args.max_epochs, slice_users=args.slice_users,
        timeout_per_trial=args.timeout_per_trial, prune=args.prune,
        run_dir=Path(args.run_dir) if args.run_dir else None, device=args.device,
        workers=args.workers, fixed=fixed, progress=not args.quiet,
        data_options=data_options(args), keep_models=args.keep_models,
    )
    # The executor first: on a multi-node Ray cluster a SQLite URL is refused before the file exists.
    executor = make_executor(args)
    try:
        storage = check_storage(args.storage)  # a bad URL fails fast; opened once the data has loaded
        summary = run_search(method, options, storage=storage, executor=executor)
    finally:
        close_executor(executor)
    _print_summary(summary)
    if args.json_out:
        from virtualmle.search.report import write_atomic

        write_atomic(Path(args.json_out), json.dumps(summary.to_json(), indent=2))
    return 0


def _print_summary(s) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(s.outcomes.items()))
    console.print(
        f"[bold]{s.study_name}[/]: {s.trials_used}/{s.budget} trials ({outcomes}); "
        f"compute {s.compute_seconds:.1f} s, wall {s.wall_seconds:.1f} s"
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
