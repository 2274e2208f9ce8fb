"""The transfer experiment: distil two datasets, tune a third with and without transfer.

1. Sources: the agent tunes each source dataset for real (`run_search` with the local executor)
   at the bench's fidelity, writing into one temporary memory bank; at the end of each study it
   distils a cognition summary into that bank (the agent's `finish`).
2. Target: for every seed, the agent tunes the target dataset once per arm: ``auto`` (a copy of
   the source bank, so seeds never see each other's target memory), ``none`` (an empty bank), and
   for the transfer ablation ``rules`` (the sources' rules only) and ``trials`` (their trials only,
   as the surrogate's prior). With ``--table`` the target's trials are replayed from the trial table (its fidelity is
   then also the sources' fidelity), otherwise trained for real.
3. Rule accuracy (with ``--table``): each source rule judged on the target's complete table
   (`bench.rule_accuracy`).
4. Report: per arm, trials and compute seconds until the best validation value reaches the target
   (``target_frac`` x the best value any target run found), mean over seeds, plus the best value.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from virtualmle.errors import ConfigError

ARMS = ("auto", "none")
# The transfer ablation's arms: what the target study takes from the source bank.
ARM_PARTS = {"auto": "both", "rules": "rules", "trials": "trials", "none": None}


@dataclass
class TransferResult:
    """The runs of both arms and the target they are measured against."""

    target: float | None
    best_any: float | None
    runs: dict[str, list[Any]]  # arm -> RunResult per seed
    sources: list[dict[str, Any]]
    options: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    verdicts: list[Any] = field(default_factory=list)  # RuleVerdicts of the sources' rules on the table

    def rows(self) -> list[dict[str, Any]]:
        """Per-arm summary rows."""
        from virtualmle.bench.stats import mean as _mean, median as _median, se as _se

        out = []
        for arm, runs in self.runs.items():
            reach = [r.to_reach(self.target) if self.target is not None else (None, None) for r in runs]
            t = [x for x, _ in reach if x is not None]
            s = [y for _, y in reach if y is not None]
            bests = [r.best_value for r in runs if r.best_value is not None]
            out.append({
                "transfer": arm, "runs": len(runs), "reached": len(t),
                "trials_to_target_mean": _mean(t), "trials_to_target_median": _median(t),
                "seconds_to_target_mean": _mean(s), "best_valid_mean": _mean(bests), "best_valid_se": _se(bests),
                "per_seed_trials_to_target": [x for x, _ in reach],
                "llm_calls": sum(int(r.llm.get("calls", 0)) for r in runs) / max(1, len(runs)),
                "snap_rate": (sum(r.snaps for r in runs) / max(1, sum(r.trials for r in runs))
                              if runs and all(r.snaps is not None for r in runs) else None),
            })
        return out

    def markdown(self) -> str:
        """The result as a Markdown paragraph and table."""
        from virtualmle.bench.report import fmt

        o = self.options
        lines = [
            f"Transfer experiment: sources {', '.join(s['dataset'] for s in self.sources)} "
            f"({o.get('source_trials')} agent trials each, distilled into one bank), target {o.get('data')} "
            f"({'replayed from ' + str(o['table']) if o.get('table') else 'trained'}), {o.get('trials')} trials "
            f"per run, seeds {o.get('seed0')}..{o.get('seed0', 0) + o.get('seeds', 1) - 1}; target = "
            f"{o.get('target_frac')} x best any target run found ({fmt(self.best_any)}) = {fmt(self.target)}.",
            "",
            "| transfer | runs | reached target | trials to target (mean / median) | per seed | compute s to target (mean) | best valid (mean ± se) | snapped trials | LLM calls / run |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows():
            per = ", ".join("-" if x is None else str(x) for x in r["per_seed_trials_to_target"])
            lines.append(
                f"| {r['transfer']} | {r['runs']} | {r['reached']}/{r['runs']} | "
                f"{fmt(r['trials_to_target_mean'], 1)} / {fmt(r['trials_to_target_median'], 1)} | {per} | "
                f"{fmt(r['seconds_to_target_mean'], 0)} | {fmt(r['best_valid_mean'])} ± {fmt(r['best_valid_se'])} | "
                f"{'-' if r['snap_rate'] is None else format(100 * r['snap_rate'], '.0f') + '%'} | "
                f"{fmt(r['llm_calls'], 1)} |")
        src = "; ".join(f"{s['dataset']}: best {fmt(s['best_value'])} in {s['trials']} trials, "
                        f"{s['rules']} rule(s) distilled" for s in self.sources)
        lines += ["", f"Sources: {src}."]
        if self.verdicts:
            from virtualmle.bench.rule_accuracy import accuracy_line, markdown as verdict_table

            lines += ["", f"Rule accuracy on the target's table (rules whose move goes the table's way in "
                          f"more than half of the one-parameter pairs): {accuracy_line(self.verdicts)}.", "",
                      verdict_table(self.verdicts).rstrip("\n")]
        return "\n".join(lines) + "\n"


def run_transfer(opts: Any, *, sources: list[str], source_trials: int = 10,
                 on_run: Callable[[str, int, int, int], None] | None = None,
                 sources_only: bool = False, arms: tuple[str, ...] = ARMS) -> TransferResult | None:
    """Run (or resume) the transfer experiment and write ``transfer.md`` / ``transfer.json``.

    Args:
        opts: `BenchOptions` (data = the target, trials / seeds / table / fidelity / llm used).
        sources: the two (or more) datasets to distil.
        source_trials: agent trials per source study.
        on_run: progress callback ``(label, seed, index, total)``.
        sources_only: stop after the source studies (returns None); they can run while a table
            is still being built, since they only need its axes and fidelity.
        arms: target arms (`ARM_PARTS`): ``auto`` (rules and prior trials), ``rules`` only,
            ``trials`` only, ``none``.

    Raises:
        ConfigError: fewer than one source, a source equal to the target, bad options.
    """
    import optuna

    from virtualmle.files import write_atomic
    from virtualmle.bench.results import read_run
    from virtualmle.bench.runner import resolve_target, space_tag
    from virtualmle.bench.usage import record_run
    from virtualmle.bench.table import TableExecutor
    from virtualmle.data import load_dataset
    from virtualmle.search.loop import SearchOptions, run_search
    from virtualmle.methods import get_method
    from virtualmle.search.storage import open_storage

    if not sources:
        raise ConfigError("--sources: name at least one source dataset")
    if source_trials < 1 or opts.trials < 1 or opts.seeds < 1:
        raise ConfigError("--source-trials, --trials and --seeds must be >= 1")
    bad = [a for a in arms if a not in ARM_PARTS]
    if bad or not arms:
        raise ConfigError(f"--transfer-arms: unknown arm(s) {', '.join(bad) or '(none given)'}; "
                          f"choose from {', '.join(ARM_PARTS)}")
    target = resolve_target(opts, data_label="--data (the target dataset)")
    table, target_data, model = target.table, target.data, target.model
    slice_users, max_epochs, space = target.slice_users, target.max_epochs, target.space
    target_name = load_dataset(target_data, slice_users=slice_users).name
    source_names = [load_dataset(s, slice_users=slice_users).name for s in sources]
    if target_name in source_names:
        raise ConfigError(f"--sources: {target_name!r} is the target dataset; use other datasets")
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    storage_url = opts.storage or f"sqlite:///{(out / 'bench.db').resolve()}"
    storage = open_storage(storage_url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    agent_opts = {k: v for k, v in opts.agent_options.items() if k != "transfer"}
    tag = space_tag(opts)  # another space: other studies and source bank
    suffix = ("" if agent_opts.get("reflection", True) else "-norefl") + tag
    root = (out / "transfer").resolve()
    banks = Path(opts.memory).resolve() if opts.memory else root  # committed with a journal: resumable anywhere
    source_bank = banks / f"bank-sources{tag}"
    total = len(sources) + len(arms) * opts.seeds
    step = 0

    src_rows = []
    for src, name in zip(sources, source_names):
        study = f"transfer-src-{name}-{model}{suffix}-s{opts.seed0}"
        run_dir = root / "runs" / study
        if on_run:
            on_run(f"source {name}", opts.seed0, step, total)
        step += 1
        method = get_method("agent", space=space, seed=opts.seed0, llm=opts.llm, memory_dir=source_bank,
                            transfer="none", display=False, **agent_opts)
        so = SearchOptions(data=src, model=model, trials=source_trials, seed=opts.seed0, metric=opts.metric,
                           study_name=study, space=space, max_epochs=max_epochs, slice_users=slice_users,
                           run_dir=run_dir, device=opts.device, workers=opts.workers,
                           timeout_per_trial=opts.timeout_per_trial, time_budget=opts.time_budget)
        summary = run_search(method, so, storage=storage)
        from virtualmle.memory import MemoryBank

        # The loop's end-of-study hook distilled it (also when the study was already complete).
        sums = [s for s in MemoryBank(source_bank).summaries(model) if s.dataset == name]
        src_rows.append({"dataset": name, "study": study, "best_value": summary.best_value,
                         "trials": summary.trials_used, "rules": len(sums[-1].rules) if sums else 0})

    if sources_only:
        return None
    verdicts = []
    if table is not None:  # rule accuracy: do the sources' rules hold on the target's table?
        from virtualmle.bench.rule_accuracy import rule_accuracy
        from virtualmle.memory import MemoryBank

        # the newest summary per source: what the target's transfer=auto retrieves
        verdicts = rule_accuracy(MemoryBank(source_bank).get_summaries(source_names, model), table)
    runs: dict[str, list[Any]] = {arm: [] for arm in arms}
    for k in range(opts.seeds):
        seed = opts.seed0 + k
        for arm in arms:
            study = f"bench-transfer-{target_name}-{model}-{arm}{suffix}-s{seed}"
            run_dir = root / "runs" / study
            bank = banks / f"bank-{arm}{suffix}-s{seed}"
            if not bank.exists():
                if ARM_PARTS[arm] is not None:
                    shutil.copytree(source_bank, bank)
                else:
                    bank.mkdir(parents=True)
            if on_run:
                on_run(f"target {target_name} transfer={arm}", seed, step, total)
            step += 1
            parts = ARM_PARTS[arm]
            method = get_method("agent", space=space, seed=seed, llm=opts.llm, memory_dir=bank,
                                transfer="none" if parts is None else "auto", transfer_parts=parts or "both",
                                display=False, **agent_opts)
            executor = TableExecutor(table, workers=opts.workers) if table is not None else None
            so = SearchOptions(data=target_data, model=model, trials=opts.trials, seed=seed, metric=opts.metric,
                               study_name=study, space=space, max_epochs=max_epochs, slice_users=slice_users,
                               run_dir=run_dir, device=opts.device, workers=opts.workers,
                               timeout_per_trial=opts.timeout_per_trial, time_budget=opts.time_budget)
            t0 = time.monotonic()
            run_search(method, so, executor=executor, storage=storage)
            st = optuna.load_study(study_name=study, storage=storage)
            record_run(st, run_dir, time.monotonic() - t0)
            runs[arm].append(read_run(st, f"agent-transfer-{arm}", seed, run_dir, table))

    values = [r.best_value for rs in runs.values() for r in rs if r.best_value is not None]
    best_any = max(values) if values else None
    result = TransferResult(
        target=best_any * opts.target_frac if best_any is not None else None, best_any=best_any,
        runs=runs, sources=src_rows, verdicts=verdicts,
        options={"data": target_name, "model": model, "table": str(opts.table) if opts.table else None,
                 "trials": opts.trials, "seeds": opts.seeds, "seed0": opts.seed0, "target_frac": opts.target_frac,
                 "source_trials": source_trials, "slice_users": slice_users, "max_epochs": max_epochs,
                 "agent_options": agent_opts, "storage": storage_url},
    )
    write_atomic(out / "transfer.md", result.markdown())
    doc = {"options": result.options, "target": result.target, "best_any": best_any, "sources": src_rows,
           "rule_accuracy": [dict(v.__dict__, holds=v.holds) for v in verdicts],
           "arms": result.rows(),
           "runs": {arm: [{"seed": r.seed, "study": r.study, "values": r.values, "seconds": r.seconds,
                           "best_value": r.best_value, "llm": r.llm} for r in rs] for arm, rs in runs.items()}}
    write_atomic(out / "transfer.json", json.dumps(doc, indent=1, default=str))
    result.files = {"transfer.md": str(out / "transfer.md"), "transfer.json": str(out / "transfer.json")}
    return result
