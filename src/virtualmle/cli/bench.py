"""`virtualmle bench`: compare search methods with the same budget over seeds (real or tabular)."""

from __future__ import annotations

import argparse
from pathlib import Path

from virtualmle.cli.data_options import data_options
from virtualmle.cli.options import add_run_options, check_run_options, llm_options
from virtualmle.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `bench` command."""
    p = subparsers.add_parser(
        "bench",
        help="budget-matched, multi-seed comparison of methods (real training or a trial table)",
        description=(
            "Run every method x seed as its own study through the same search loop, executor and\n"
            "storage, then report per method: best validation metric after n trials (mean and\n"
            "standard error over seeds), the test metric of the configuration each run chose by\n"
            "validation, trials and compute seconds to reach a target (default 97% of the best\n"
            "validation value any run found), and LLM calls / tokens / cost. Writes runs.csv,\n"
            "summary.csv, curves.csv, bench.md, bench.json and PNG plots into --out. Running the\n"
            "same command again resumes every study (a larger --trials or --seeds extends it).\n\n"
            "With --table FILE the trials are not trained: they are looked up in a CSV of real,\n"
            "already-trained grid trials (benchmarks/tables/), a proposal off the table snaps to the\n"
            "nearest point (counted), and the stored seconds drive the compute curves, so many\n"
            "seeds take minutes. --transfer-experiment runs the transfer experiment instead."
        ),
        epilog=(
            "examples:\n"
            "  virtualmle bench --table benchmarks/tables/beauty_sasrec_grid729.csv \\\n"
            "      --methods agent,opro,tpe,random,grid,default --trials 30 --seeds 10 --out bench-tab/\n"
            "  virtualmle bench --data beauty --model sasrec --methods tpe,random,default --trials 20 \\\n"
            "      --seeds 3 --slice-users 2000 --max-epochs 3 --workers 2 --out bench-real/\n"
            "  virtualmle bench --transfer-experiment --sources baby,toys --data beauty \\\n"
            "      --table benchmarks/tables/beauty_sasrec_grid729.csv --trials 15 --seeds 3 --out bench-transfer/\n"
            "storage: default sqlite:///<out>/bench.db; studies are named bench-<data>-<model>-<method>-s<seed>\n"
            "(bench-table-... for table replays) and can be browsed with optuna-dashboard or virtualmle report."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", default=None, metavar="NAME_OR_PATH", help="dataset (required without --table; the table's otherwise)")
    p.add_argument("--methods", default="agent,opro,tpe,random,grid,default", metavar="A,B,...",
                   help="registered methods to compare (default agent,opro,tpe,random,grid,default)")
    p.add_argument("--seeds", type=int, default=3, metavar="S", help="runs per method (default 3)")
    p.add_argument("--out", default="bench-out", metavar="DIR", help="output directory (default bench-out)")
    p.add_argument("--table", default=None, metavar="FILE", help="replay this trial table instead of training")
    p.add_argument("--table-space", default="grid", choices=("grid", "full"),
                   help="with --table: search exactly the table's points (grid, default) or the shipped space "
                        "with off-table proposals snapped (full)")
    p.add_argument("--target-frac", type=float, default=0.97, metavar="F",
                   help="target = F x the best validation value any run found (default 0.97)")
    p.add_argument("--agent-transfer", default="none", metavar="auto|none|NAMES",
                   help="the agent's --transfer in a bench (default none: each run starts from an empty bank)")
    p.add_argument("--agent-no-reflection", action="store_true",
                   help="ablation: the agent without its Reflect step (fewer LLM calls; reported as agent-norefl)")
    p.add_argument("--agent-no-memory", action="store_true",
                   help="ablation: the agent without long-term memory (no insights, no cognition summary; "
                        "reported as agent-nomem)")
    p.add_argument("--agent-code", action="store_true",
                   help="ablation: the agent with every LLM step off (no reflection, no memory, the surrogate's "
                        "top candidate taken without asking the LLM; reported as agent-code)")
    p.add_argument("--space", default=None, metavar="FILE",
                   help="search space of real runs: a YAML file or a preset (extended); default the shipped "
                        "space of --model (a --table's points are its own space)")
    p.add_argument("--agent-screen", type=int, default=0, metavar="E",
                   help="the agent screens candidates for E epochs and promotes the best from its checkpoint "
                        "(live trials only; reported as agent-screen)")
    p.add_argument("--agent-screen-repeat", type=int, default=0, metavar="K",
                   help="with --agent-screen: stop a screen whose first K validations repeat a finished trial's "
                        "flat curve (tune --screen-repeat; default 0: off)")
    p.add_argument("--transfer-experiment", action="store_true",
                   help="run the transfer experiment: distil --sources, then tune --data with transfer auto and none")
    p.add_argument("--sources", default="baby,toys", metavar="A,B",
                   help="transfer experiment: datasets whose studies are distilled (default baby,toys)")
    p.add_argument("--transfer-arms", default="auto,none", metavar="A,B",
                   help="transfer experiment: target arms among auto (rules and prior trials), rules, trials, none "
                        "(default auto,none; all four for the transfer ablation)")
    p.add_argument("--memory", default=None, metavar="DIR",
                   help="where the agent's memory banks live (default inside --out); keep it with a journal "
                        "--storage to continue the bench on another machine")
    p.add_argument("--source-trials", type=int, default=10, metavar="N",
                   help="transfer experiment: agent trials per source dataset (default 10)")
    add_run_options(p, model_default=None, storage_help="Optuna storage URL (default sqlite:///<out>/bench.db)",
                    seed_help="first seed (default 0): seeds S0..S0+S-1")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run (or resume) the bench and print the Markdown table."""
    from rich.console import Console

    from virtualmle.bench.runner import BenchOptions, check_methods

    console = Console(stderr=True, highlight=False)
    check_run_options(args)
    methods = check_methods(args.methods.split(","))  # before any work
    if args.memory:  # an unusable bank directory fails before any storage or run directory exists
        from virtualmle.search.study_open import check_writable_dir

        check_writable_dir(Path(args.memory).expanduser(), "--memory")
    if args.agent_screen < 0 or (args.agent_screen and args.table):
        raise ConfigError("--agent-screen needs live trials and E >= 1: a table replays finished trials "
                          "and cannot stop one after E epochs")
    if args.agent_screen_repeat < 0 or (args.agent_screen_repeat and not args.agent_screen):
        raise ConfigError("--agent-screen-repeat K needs K >= 0 and --agent-screen: it stops screens")

    def on_run(method: str, seed: int, i: int, total: int) -> None:
        if not args.quiet:
            console.print(f"[{i + 1}/{total}] {method} seed {seed}")

    opts = BenchOptions(
        methods=methods, data=args.data, model=args.model, trials=args.trials, time_budget=args.time_budget,
        seeds=args.seeds,
        out=Path(args.out), memory=Path(args.memory).expanduser() if args.memory else None,
        storage=args.storage, table=Path(args.table) if args.table else None,
        table_space=args.table_space, space=args.space, max_epochs=args.max_epochs, slice_users=args.slice_users,
        workers=args.workers, target_frac=args.target_frac, metric=args.metric, llm=llm_options(args),
        agent_options={"transfer": args.agent_transfer,
                       **({"reflection": False} if args.agent_no_reflection or args.agent_code else {}),
                       **({"memory": False} if args.agent_no_memory or args.agent_code else {}),
                       **({"shortlist": 1} if args.agent_code else {}),
                       **({"screen_epochs": args.agent_screen} if args.agent_screen else {}),
                       **({"screen_repeat": args.agent_screen_repeat} if args.agent_screen_repeat else {})}, seed0=args.seed, device=args.device,
        timeout_per_trial=args.timeout_per_trial, progress=not args.quiet, data_options=data_options(args),
    )
    executor = None
    if args.executor == "ray":  # one Ray connection serves every run; a local executor is per run
        if args.table:
            raise ConfigError("--executor ray trains trials for real; it cannot be used with --table")
        from virtualmle.search.executors import make_executor

        storage = args.storage or f"sqlite:///{(Path(args.out) / 'bench.db').resolve()}"
        executor = make_executor(args, storage=storage)
        opts.executor = executor
    else:  # each run builds its own local executor; the Ray-only options are checked here, once
        from virtualmle.search.executors import check_local_options

        check_local_options(args)
    try:
        return _run(args, opts, on_run)
    finally:
        if executor is not None:
            from virtualmle.search.executors import close_executor

            close_executor(executor)


def _run(args: argparse.Namespace, opts, on_run) -> int:  # noqa: ANN001 - BenchOptions, callback
    if args.transfer_experiment:
        from virtualmle.bench.transfer import run_transfer

        res = run_transfer(opts, sources=[s.strip() for s in args.sources.split(",") if s.strip()],
                           source_trials=args.source_trials, on_run=on_run,
                           arms=tuple(a.strip() for a in args.transfer_arms.split(",") if a.strip()))
        print(res.markdown())
        return 0
    from virtualmle.bench.report import describe, markdown_table
    from virtualmle.bench.runner import run_bench

    result = run_bench(opts, on_run=on_run)
    print(describe(result))
    print()
    print(markdown_table(result))
    print(f"files: {', '.join(sorted(result.files))} in {args.out}")
    return 0
