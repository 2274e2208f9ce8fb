"""`virtualmle memory show | export | import | distill`: inspect and edit the memory bank."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from virtualmle.errors import StorageError


def _add_memory_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--memory", metavar="DIR", default=None,
        help="memory bank directory (default $VIRTUALMLE_MEMORY_DIR, else ~/.virtualmle/memory)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `memory` command and its sub-commands."""
    p = subparsers.add_parser(
        "memory",
        help="show, export, import or distill the agent's memory bank",
        description=(
            "The memory bank holds long-term insights per dataset x backbone and cognition\n"
            "summaries (transferable rules, a starting configuration and a search order) that\n"
            "`virtualmle tune --transfer auto` retrieves for similar datasets."
        ),
        epilog=(
            "examples:\n"
            "  virtualmle memory show --data beauty --model sasrec\n"
            "  virtualmle memory export --out memory.md   # edit it, then:\n"
            "  virtualmle memory import memory.md\n"
            "  virtualmle memory distill --storage sqlite:///virtualmle.db --study beauty-sasrec-agent-s0"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="memory_command", metavar="SUBCOMMAND")
    sub.required = True

    s = sub.add_parser("show", help="print insights and summaries as tables")
    _add_memory_arg(s)
    s.add_argument("--data", metavar="NAME", default=None, help="only this dataset")
    s.add_argument("--model", metavar="M", default=None, help="only this backbone (sasrec, hstu)")
    s.set_defaults(func=run_show)

    e = sub.add_parser("export", help="write the bank as editable Markdown (one YAML block per item)")
    _add_memory_arg(e)
    e.add_argument("--out", metavar="FILE.md", required=True, type=Path, help="Markdown file to write")
    e.add_argument("--data", metavar="NAME", default=None, help="only this dataset")
    e.add_argument("--model", metavar="M", default=None, help="only this backbone")
    e.set_defaults(func=run_export)

    i = sub.add_parser(
        "import", help="read an edited Markdown export back into the bank",
        description="Parse FILE.md (as written by `memory export`) and replace the insights and "
        "summaries it contains. A malformed file changes nothing: one error line names the line.",
    )
    _add_memory_arg(i)
    i.add_argument("file", metavar="FILE.md", type=Path, help="the edited export")
    i.set_defaults(func=run_import)

    d = sub.add_parser(
        "distill",
        help="turn a finished study into a cognition summary in the bank",
        description="Read a study from Optuna storage, measure the effect of each parameter move "
        "(trial vs the configuration it changed), merge the bank's insights for the dataset x "
        "backbone, and store the ranked transferable rules, starting configuration and search "
        "order. With --llm the model may reword rule texts; numbers always come from the trials.",
    )
    _add_memory_arg(d)
    d.add_argument("--storage", metavar="URL", required=True, help="Optuna storage URL, e.g. sqlite:///virtualmle.db")
    d.add_argument("--study", metavar="NAME", required=True, help="study name")
    d.add_argument("--data", metavar="NAME", default=None,
                   help="dataset name (default: the study's `dataset` user attribute)")
    d.add_argument("--model", metavar="M", default=None,
                   help="backbone (default: the study's `model` user attribute or trial params)")
    d.add_argument("--llm", metavar="SPEC", default=None,
                   help="optional LLM to reword rule texts (same specs as `tune --llm`); default: none")
    d.add_argument("--max-rules", metavar="N", type=int, default=8, help="rules kept (default 8)")
    d.set_defaults(func=run_distill)


def _bank(args: argparse.Namespace) -> Any:
    from virtualmle.memory import MemoryBank

    return MemoryBank(args.memory)


def run_show(args: argparse.Namespace) -> int:
    """Rich tables of insights and summaries."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text  # cells as Text: stored (LLM) text is never parsed as rich markup

    from virtualmle.memory import slugify

    bank = _bank(args)
    console = Console()
    want = slugify(args.data) if args.data else None
    shown = 0
    for iset in bank.insight_sets():
        if (want and slugify(iset.dataset) != want) or (args.model and iset.model.lower() != args.model.lower()):
            continue
        t = Table(title=Text(f"insights: {iset.dataset} x {iset.model}"), show_lines=False)
        for col in ("id", "votes", "conf.", "evidence", "rule", "by", "text"):
            t.add_column(col, overflow="fold")
        for ins in iset.ranked():
            rule = ins.rule.describe() if ins.rule else (" + ".join(a.describe() for a in ins.combo) + " (together)"
                                                          if ins.combo else "-")
            t.add_row(*map(Text, (ins.id, str(ins.votes), f"{ins.confidence:.2f}",
                                  f"+{len(ins.supporting)} / -{len(ins.contradicting)}", rule, ins.source, ins.text)))
        console.print(t)
        if iset.text_rejections:
            console.print(f"  LLM texts rejected by the fact check (stored from code facts instead): "
                          f"{iset.rejected_total} in {len(iset.text_rejections)} trial(s)", markup=False)
        if iset.proposals:
            t = Table(title=Text(f"proposed changes for a person: {iset.dataset} x {iset.model} "
                                 "(not applied; edit the bank with memory export / import)"))
            for col in ("op", "id", "by", "why held", "new text"):
                t.add_column(col, overflow="fold")
            for prop in iset.proposals:
                t.add_row(*map(Text, (prop.op, prop.id, prop.source, prop.reason, prop.text or "-")))
            console.print(t)
        shown += 1
    for s in bank.summaries(args.model):
        if want and slugify(s.dataset) != want:
            continue
        t = Table(title=Text(f"cognition summary: {s.dataset} x {s.model} (study {s.study or '-'}, "
                             f"{s.n_trials} trials, best {s.metric} {_num(s.best_value)})"))
        for col in ("#", "rule", "conf.", "evidence", "effect", "text"):
            t.add_column(col, overflow="fold")
        for n, r in enumerate(s.rules, 1):
            t.add_row(*map(Text, (str(n), r.rule.describe(), f"{r.confidence:.2f}", str(r.evidence),
                                  "-" if r.effect is None else f"{r.effect:+.1%}", r.text)))
        console.print(t)
        for f in s.findings:
            good = (f"{f.good[0]}..{f.good[1]}" if len(f.good) == 2 and all(isinstance(v, (int, float)) for v in f.good)
                    else ", ".join(map(str, f.good)))
            console.print(f"  mattered: {f.param} ({f.move}, {f.effect:+.1%}, {f.evidence} trial(s), {f.source})"
                          + (f"; in the best {f.good_evidence} trials: {good}" if f.good else ""), markup=False)
        for c in s.combinations:
            console.print(f"  combination: {c}", markup=False)
        if s.start_config:
            console.print("  start config: " + ", ".join(f"{k}={v}" for k, v in s.start_config.items())
                          + f" (best of {s.start_evidence} completed trials)", markup=False)
        if s.search_order:
            console.print("  search order: " + ", ".join(f"{p} ({next((f.evidence for f in s.findings if f.param == p), 0)})"
                                                         for p in s.search_order)
                          + " (trials behind each)", markup=False)
        shown += 1
    if not shown:
        console.print(f"memory bank {bank.root}: nothing stored" + (" for that filter" if want or args.model else ""),
                      markup=False)
    return 0


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.6f}"


def run_export(args: argparse.Namespace) -> int:
    """Write the Markdown export atomically."""
    from virtualmle.memory.bank import write_atomic
    from virtualmle.memory.markdown import export_markdown

    bank = _bank(args)
    text = export_markdown(bank, dataset=args.data, model=args.model)
    write_atomic(args.out, text)
    print(f"wrote {args.out} ({sum(1 for ln in text.splitlines() if ln.strip() == '```yaml')} items)")
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Parse and store an edited export."""
    from virtualmle.memory.markdown import import_markdown

    bank = _bank(args)
    n_ins, n_sum = import_markdown(bank, args.file)
    print(f"imported {n_ins} insights and {n_sum} summaries into {bank.root}")
    return 0


def load_study_memory(storage_url: str, study_name: str) -> tuple[Any, dict[str, Any]]:
    """(StudyMemory, study user attrs) of a study in Optuna storage."""
    import optuna

    from virtualmle.memory import StudyMemory

    try:
        from virtualmle.search.storage import open_storage

        storage: Any = open_storage(storage_url)
    except ImportError:  # pragma: no cover - partial checkout
        storage = storage_url
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise StorageError(f"no study named {study_name!r} in {storage_url}") from None
    attrs = dict(study.user_attrs)
    direction = "minimize" if study.direction == optuna.study.StudyDirection.MINIMIZE else "maximize"
    mem = StudyMemory.from_records(
        study.get_trials(deepcopy=False), metric=str(attrs.get("metric", "ndcg@10")), direction=direction,
        study=study_name, dataset=str(attrs.get("dataset", "")), model=str(attrs.get("model", "")),
    )
    return mem, attrs


def run_distill(args: argparse.Namespace) -> int:
    """Distil a finished study and store the summary."""
    from virtualmle.errors import ConfigError
    from virtualmle.memory import distill

    if args.max_rules < 1:
        raise ConfigError(f"--max-rules must be at least 1, got {args.max_rules}")
    mem, attrs = load_study_memory(args.storage, args.study)
    if not mem.completed:
        raise StorageError(f"study {args.study!r} in {args.storage} has no completed trial to distil")
    dataset = args.data or attrs.get("dataset")
    model = args.model or attrs.get("model") or next((e.params.get("model") for e in mem.trials if e.params.get("model")), None)
    if not dataset:
        raise ConfigError(f"study {args.study!r} has no `dataset` user attribute: pass --data NAME")
    if not model:
        raise ConfigError(f"study {args.study!r} has no `model` user attribute: pass --model M")
    profile = attrs.get("profile")
    if not isinstance(profile, dict) or not profile:
        profile = _profile_of(dataset)
    mem.dataset, mem.model = str(dataset), str(model)
    bank = _bank(args)
    llm = None
    if args.llm:
        from virtualmle.llm import make_llm

        llm = make_llm(args.llm)
    summary = distill(mem, profile, str(model), insights=bank.insights(str(dataset), str(model)),
                      llm=llm, dataset=str(dataset), max_rules=args.max_rules)
    path = bank.save_summary(summary)
    best = summary.best_value
    best_txt = f" (best {summary.metric} {best:.6f})" if best is not None and math.isfinite(best) else ""
    print(f"distilled {summary.n_trials} trials of {args.study!r} into {len(summary.rules)} rules{best_txt}")
    print(f"wrote {path}")
    return 0


def _profile_of(dataset: str) -> dict[str, Any]:
    """Profile a dataset by name when the study did not store one."""
    from virtualmle.data import load_dataset, profile_dataset

    return profile_dataset(load_dataset(dataset))
