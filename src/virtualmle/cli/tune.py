"""`virtualmle tune`: the VirtualMLE agent (plan, act, observe, reflect, remember) on one dataset."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from virtualmle.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `tune` command."""
    from virtualmle.llm.cli_args import add_llm_arguments
    from virtualmle.search.executors import add_executor_arguments

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
    p.add_argument("--data", required=True, metavar="NAME_OR_PATH",
                   help="dataset name (beauty, baby, pet_supplies, sports, toys) or a file path")
    p.add_argument("--model", default="sasrec", metavar="NAME", help="backbone: sasrec or hstu (default sasrec)")
    p.add_argument("--trials", type=int, default=20, metavar="N",
                   help="budget: trials in the study, including those of earlier runs (default 20)")
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
    p.add_argument("--plateau-k", type=int, default=3, metavar="K",
                   help="after K trials on the same parameters without improvement, force another parameter (default 3)")
    p.add_argument("--shortlist", type=int, default=4, metavar="N",
                   help="hybrid mode: at most N near-tied candidates are shown to the LLM (default 4)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage URL: sqlite:///FILE (default sqlite:///virtualmle.db), postgresql://..., journal:///FILE")
    p.add_argument("--study", default=None, metavar="NAME",
                   help="study name (default <dataset>-<model>-agent-s<seed>, plus the mode / ablation)")
    p.add_argument("--workers", type=int, default=1, metavar="K", help="trials at once (default 1)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="study seed (default 0)")
    p.add_argument("--space", default=None, metavar="FILE", help="your own search-space YAML (default: the shipped one)")
    p.add_argument("--max-epochs", type=int, default=None, metavar="E", help="fidelity: cap every trial's epochs")
    p.add_argument("--slice-users", type=int, default=None, metavar="N", help="fidelity: train on the first N users")
    p.add_argument("--metric", default="ndcg@10", metavar="NAME", help="validation metric to maximise (default ndcg@10)")
    p.add_argument("--timeout-per-trial", type=float, default=None, metavar="S",
                   help="kill a trial after S seconds and record it as timeout")
    p.add_argument("--run-dir", default=None, metavar="DIR",
                   help="per-trial files and the LLM call log llm_calls.jsonl (default runs/<study>)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where trials train (default auto)")
    p.add_argument("--json", dest="json_out", default=None, metavar="FILE", help="also write the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    add_llm_arguments(p)
    add_executor_arguments(p)
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
    if args.no_memory:
        suffix += "-nomem"
    elif args.transfer.strip().lower() == "none":
        suffix += "-notransfer"
    if not suffix:
        return None  # the loop's default: <dataset>-<model>-agent-s<seed>
    from virtualmle.data import load_dataset
    from virtualmle.search.storage import default_study_name

    name = load_dataset(args.data, slice_users=args.slice_users).name
    return default_study_name(name, args.model, "agent", args.seed) + suffix


def run(args: argparse.Namespace) -> int:
    """Run (or resume) the agent's study and print the summary."""
    import optuna

    from virtualmle.agent import AgentConfig, VirtualMLEAgent
    from virtualmle.search.executors import close_executor, make_executor
    from virtualmle.search.loop import SearchOptions, run_search
    from virtualmle.search.space import load_space
    from virtualmle.search.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    if args.model not in ("sasrec", "hstu"):
        raise ConfigError(f"unknown backbone {args.model!r}: use one of sasrec, hstu")
    if args.trials < 1:
        raise ConfigError(f"--trials must be >= 1 (got {args.trials})")
    if args.plateau_k < 1 or args.shortlist < 1:
        raise ConfigError("--plateau-k and --shortlist must be >= 1")
    space = load_space(args.model, args.space)
    # The executor first: on a multi-node Ray cluster a SQLite URL is refused before the file exists.
    executor = make_executor(args)
    try:
        storage = open_storage(args.storage)  # a bad URL fails before any work
    except BaseException:
        close_executor(executor)
        raise
    study = _study_name(args)
    config = AgentConfig(
        mode=args.mode, reflection=not args.no_reflection, memory=not args.no_memory,
        memory_dir=Path(args.memory).expanduser() if args.memory else None,
        transfer="none" if args.no_memory else args.transfer, plateau_k=args.plateau_k,
        shortlist=args.shortlist, display=not args.quiet,
    )
    if config.memory:
        from virtualmle.memory import MemoryBank

        bank = MemoryBank(config.memory_dir)  # an unusable bank fails before any work
        bank.check_writable()
        names = [n.strip() for n in config.transfer.split(",") if n.strip()]
        if names and names[0].lower() not in ("auto", "none"):
            bank.get_summaries(names, args.model)  # an unknown --transfer name fails now, not after trial 1
    options = SearchOptions(
        data=args.data, model=args.model, trials=args.trials, seed=args.seed, metric=args.metric,
        study_name=study, space=space, max_epochs=args.max_epochs, slice_users=args.slice_users,
        timeout_per_trial=args.timeout_per_trial, run_dir=Path(args.run_dir) if args.run_dir else None,
        device=args.device, workers=args.workers, progress=not args.quiet,
    )
    from virtualmle.search.loop import default_run_dir

    run_dir = options.run_dir or (default_run_dir(study) if study else Path("runs"))
    llm = _LazyLLM(args, run_dir if study or args.run_dir else None)
    agent = VirtualMLEAgent(space=space, seed=args.seed, llm=llm, config=config)
    try:
        summary = run_search(agent, options, storage=storage, executor=executor)
    finally:
        llm.close()
        close_executor(executor)
    from virtualmle.cli.search import _print_summary

    _print_summary(summary)
    usage = llm.usage_dict()
    if usage and not args.quiet:
        print(f"LLM: {usage['calls']} calls, {usage['total_tokens']} tokens, {usage['seconds']:.1f} s, "
              f"cache hits {usage['cache_hits']}")
    if args.json_out:
        from virtualmle.search.report import write_atomic

        doc = {**summary.to_json(), "llm_usage": usage}
        write_atomic(Path(args.json_out), json.dumps(doc, indent=2))
    return 0


class _LazyLLM:
    """Builds the client on the agent's first LLM call, in the study's run directory.

    The run directory of a default-named study is only known inside the search loop, so the
    agent hands its context's `run_dir` over on first use; nothing is loaded when no LLM call is
    needed (e.g. a resumed study that is already complete).
    """

    def __init__(self, args: argparse.Namespace, run_dir: Path | None) -> None:
        self.args = args
        self.run_dir = run_dir
        self.client = None

    def bind(self, run_dir: Path) -> None:
        if self.run_dir is None:
            self.run_dir = run_dir

    def structured(self, *a, **kw):  # noqa: ANN002, ANN003 - forwards LLMClient.structured
        if self.client is None:
            from virtualmle.llm.cli_args import make_llm_from_args

            self.client = make_llm_from_args(self.args, self.run_dir)
        return self.client.structured(*a, **kw)

    @property
    def spec(self):  # noqa: ANN201 - the parsed --llm spec, without loading the model
        import os

        from virtualmle.llm import parse_spec
        from virtualmle.llm.cli_args import LLM_ENV

        return parse_spec(getattr(self.args, "llm", None) or os.environ.get(LLM_ENV) or None)

    @property
    def usage(self):  # noqa: ANN201
        return self.client.usage if self.client is not None else None

    def usage_dict(self) -> dict | None:
        return self.client.usage.to_dict() if self.client is not None else None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
