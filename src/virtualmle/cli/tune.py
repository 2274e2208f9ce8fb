"""`virtualmle tune`: the VirtualMLE agent (plan, act, observe, reflect, remember) on one dataset."""

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
from virtualmle.errors import ConfigError
from virtualmle.files import write_atomic


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `tune` command."""
    p = subparsers.add_parser(
        "tune",
        help="let the VirtualMLE agent tune a backbone (reflection, memory, transfer)",
        description=(
            "Tune a sequential recommender with the VirtualMLE agent. Trial 1 is the backbone's\n"
            "default configuration; each later trial is ONE change of the best configuration so far\n"
            "(one or two parameters), chosen from candidates generated in code from the last trial's\n"
            "diagnostics, parameter coverage and remembered / transferred rules, ranked by a surrogate\n"
            "model; the LLM picks among near-equal candidates and writes the hypothesis, then reflects\n"
            "on the result. Keep / discard uses the validation metric only. Every trial, with its\n"
            "hypothesis, diagnostics and reflection, is stored in the Optuna study; running the same\n"
            "command again resumes it. At the end the study is distilled into a cognition summary in\n"
            "the memory bank, which later studies on similar datasets use with --transfer auto."
        ),
        epilog=(
            "modes: hybrid (default; code candidates + surrogate, the LLM picks among near ties) or\n"
            "llm (the LLM proposes the change itself; validated, snapped, re-asked, then a fallback).\n"
            "ablations: --no-reflection, --no-memory (also no transfer), --transfer none;\n"
            "the OPRO baseline is `virtualmle search --method opro`.\n\n"
            "examples:\n"
            "  virtualmle tune --data beauty --model sasrec --trials 20\n"
            "  virtualmle tune --data baby --trials 10 --transfer auto --memory ~/.virtualmle/memory\n"
            "  virtualmle tune --data beauty --trials 20 --llm http://127.0.0.1:8000/v1#qwen\n"
            "  virtualmle tune --data beauty --trials 4 --slice-users 4000 --max-epochs 3   (a quick demo)\n"
            "browse: optuna-dashboard sqlite:///virtualmle.db   or   virtualmle report --out report/"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_study_options(p, study_help="study name (default <dataset>-<model>-agent-s<seed>, plus the mode / ablation)")
    p.add_argument("--memory", default=None, metavar="DIR",
                   help="memory bank directory (default $VIRTUALMLE_MEMORY_DIR or ~/.virtualmle/memory)")
    p.add_argument("--transfer", default="auto", metavar="auto|none|NAME,...",
                   help="cognition summaries to start from: auto (the most similar datasets in the bank), "
                        "none, or dataset names (default auto)")
    p.add_argument("--mode", default="hybrid", choices=("hybrid", "llm"),
                   help="hybrid: code candidates ranked by a surrogate, the LLM picks among near ties "
                        "(default); llm: the LLM proposes each change itself")
    p.add_argument("--no-reflection", action="store_true", help="ablation: skip the Reflect step")
    p.add_argument("--no-memory", action="store_true",
                   help="ablation: no long-term memory, no transfer, no cognition summary")
    p.add_argument("--stop-hopeless", action="store_true",
                   help="watch each running trial's validation curve and stop it when it cannot reach the "
                        "incumbent (the reason is stored with the trial and shown in the report)")
    p.add_argument("--screen-epochs", type=int, default=0, metavar="E",
                   help="screen each round's best candidates for E epochs, then continue the best one from its "
                        "checkpoint to full training (default 0: every trial trains in full)")
    p.add_argument("--screen-width", type=int, default=3, metavar="N",
                   help="with --screen-epochs: candidates screened per round (default 3)")
    p.add_argument("--screen-cost", type=float, default=5.0, metavar="X",
                   help="with --screen-epochs: stop a screen that costs, or on its pace would cost, more than X "
                        "times the study's median screen (and, with --budget TIME, 15%% of it), so its round goes on "
                        "without it (default 5; 0: no cap)")
    p.add_argument("--confirm-patience", type=int, default=5, metavar="P",
                   help="with --screen-epochs: a promotion that would only confirm its screen's curve continues "
                        "with less patience: one past its peak ends at once (tested at its best epoch), a flat "
                        "one with at most P validations without gain (default 5; 0: promotions keep their "
                        "configuration's patience)")
    p.add_argument("--screen-repeat", type=int, default=0, metavar="K",
                   help="with --screen-epochs: stop a screen once its first K validations repeat, epoch for epoch "
                        "(within 0.2%%), a finished trial whose curve is flat: it would train that model again "
                        "(default 0: off)")
    p.add_argument("--plateau-k", type=int, default=3, metavar="K",
                   help="after K trials on the same parameters without improvement, force another parameter (default 3)")
    p.add_argument("--shortlist", type=int, default=4, metavar="N",
                   help="hybrid mode: at most N near-tied candidates are shown to the LLM (default 4)")
    add_run_options(p)
    p.set_defaults(func=run)


def _study_name(args: argparse.Namespace) -> str | None:
    """The default name, with the mode / ablation in it so variants never resume each other."""
    if args.study:
        return args.study
    suffix = ""
    if args.mode != "hybrid":
        suffix += f"-{args.mode}"
    if args.no_reflection:
        suffix += "-norefl"
    if args.screen_epochs:
        suffix += f"-screen{args.screen_epochs}"
    if args.no_memory:
        suffix += "-nomem"
    elif args.transfer.strip().lower() == "none":
        suffix += "-notransfer"
    if not suffix:
        return None  # the loop's default: <dataset>-<model>-agent-s<seed>
    from virtualmle.cli.data_options import data_options
    from virtualmle.data import load_dataset
    from virtualmle.search.storage import default_study_name

    name = load_dataset(args.data, slice_users=args.slice_users, **data_options(args)).name
    return default_study_name(name, args.model, "agent", args.seed) + suffix


def run(args: argparse.Namespace) -> int:
    """Run (or resume) the agent's study and print the summary."""
    import optuna

    from virtualmle.agent import AgentConfig, LLMCaller, VirtualMLEAgent
    from virtualmle.search.executors import close_executor, make_executor
    from virtualmle.search.loop import run_search
    from virtualmle.search.space import load_space
    from virtualmle.search.storage import check_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    check_run_options(args)  # an unknown metric is refused here, not after the budget is spent
    if (args.plateau_k < 1 or args.shortlist < 1 or args.screen_width < 1 or args.screen_epochs < 0
            or not args.screen_cost >= 0 or args.confirm_patience < 0 or args.screen_repeat < 0):
        raise ConfigError("--plateau-k, --shortlist and --screen-width must be >= 1, --screen-epochs, "
                          "--screen-cost, --confirm-patience and --screen-repeat >= 0")
    space = load_space(args.model, args.space)
    study = _study_name(args)
    options = search_options(args, space, study=study)  # a bad --set fails before any work
    config = AgentConfig(
        mode=args.mode, reflection=not args.no_reflection, memory=not args.no_memory,
        memory_dir=Path(args.memory).expanduser() if args.memory else None,
        transfer="none" if args.no_memory else args.transfer, plateau_k=args.plateau_k,
        shortlist=args.shortlist, display=not args.quiet, stop_hopeless=args.stop_hopeless,
        screen_epochs=args.screen_epochs, screen_width=args.screen_width, screen_cost_factor=args.screen_cost,
        confirm_patience=args.confirm_patience, screen_repeat=args.screen_repeat,
    )
    if config.memory:
        from virtualmle.memory import MemoryBank

        bank = MemoryBank(config.memory_dir)  # an unusable bank fails before any work
        bank.check_writable()
        names = [n.strip() for n in config.transfer.split(",") if n.strip()]
        if names and names[0].lower() not in ("auto", "none"):
            bank.get_summaries(names, args.model)  # an unknown --transfer name fails now, not after trial 1
    # The executor first: on a multi-node Ray cluster a SQLite URL is refused before the file exists.
    executor = make_executor(args)
    try:
        storage = check_storage(args.storage)  # a bad URL fails before any work; opened after the data loads
    except BaseException:
        close_executor(executor)
        raise
    # Built on the agent's first LLM call, in the study's run directory (known to the loop).
    llm = LLMCaller(llm_options(args))
    agent = VirtualMLEAgent(space=space, seed=args.seed, llm=llm, config=config)
    try:
        summary = run_search(agent, options, storage=storage, executor=executor)
    finally:
        llm.close()
        close_executor(executor)
    print_summary(summary)
    usage = llm.usage()
    if usage and not args.quiet:
        print(f"LLM: {usage['calls']} calls, {usage['total_tokens']} tokens, {usage['seconds']:.1f} s, "
              f"cache hits {usage['cache_hits']}")
    if args.json_out:
        doc = {**summary.to_json(), "llm_usage": usage}
        write_atomic(Path(args.json_out), json.dumps(doc, indent=2))
    return 0
