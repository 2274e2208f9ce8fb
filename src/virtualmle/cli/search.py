"""`virtualmle search`: run or resume a search with one method into an Optuna study."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from virtualmle.cli.options import (
    add_run_options,
    add_study_options,
    check_run_options,
    llm_options,
    print_summary,
    search_options,
)
from virtualmle.files import write_atomic


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
    p.add_argument("--method", required=True, metavar="NAME",
                   help="grid, random, tpe, default, agent or opro (the agent with its defaults; `virtualmle tune` "
                        "has the agent's own options)")
    add_study_options(p, study_help="study name (default <dataset>-<model>-<method>-s<seed>)")
    add_run_options(p)  # the LLM options are used by --method agent and opro
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the search and print the summary."""
    import optuna

    from virtualmle.methods import LLM_METHODS, get_method
    from virtualmle.search.executors import close_executor, make_executor
    from virtualmle.search.loop import run_search
    from virtualmle.search.space import load_space
    from virtualmle.search.storage import check_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our display reports trials
    logging.getLogger("optuna").setLevel(logging.WARNING)
    check_run_options(args)
    space = load_space(args.model, args.space)
    options = search_options(args, space, study=args.study)  # a bad --set fails before any work
    llm_opts = {"llm": llm_options(args)} if args.method in LLM_METHODS else {}
    method = get_method(args.method, space=space, seed=args.seed, **llm_opts)
    # The executor first: on a multi-node Ray cluster a SQLite URL is refused before the file exists.
    executor = make_executor(args)
    try:
        storage = check_storage(args.storage)  # a bad URL fails fast; opened once the data has loaded
        summary = run_search(method, options, storage=storage, executor=executor)
    finally:
        close_llm = getattr(getattr(method, "llm", None), "close", None)
        if close_llm is not None:
            close_llm()
        close_executor(executor)
    print_summary(summary)
    if args.json_out:
        write_atomic(Path(args.json_out), json.dumps(summary.to_json(), indent=2))
    return 0
