"""Regenerate docs/results.md and docs/results/*.png: the tabular bench, the transfer experiment
and the peer-speed numbers.

    VIRTUALMLE_DATA_DIR=/work/shared/data python benchmarks/results.py            # everything
    python benchmarks/results.py --stage classic     # only the classic methods (minutes)
    python benchmarks/results.py --stage full        # classic + agent-code over the shipped space
    python benchmarks/results.py --stage llm         # agent + OPRO on the table (LLM-bound)
    python benchmarks/results.py --stage transfer    # the transfer experiment
    python benchmarks/results.py --stage page        # only rewrite the page from stored studies

Every stage is resumable and idempotent: studies live in --work (default runs/results, ignored by
git) and a finished study is read back, not re-run, so `--stage page` after the others only
reads. Budgets and seeds are flags; the defaults are what docs/results.md states. Peer speed is
read from --peer-json (written by `benchmarks/peer_speed.py --json FILE`) when that file exists.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "benchmarks" / "tables" / "beauty_sasrec_grid729.csv"
CLASSIC = ["tpe", "random", "grid", "default"]
LLM = ["agent", "opro"]
# The agent with every LLM step off runs with the classic methods (same seeds and budget): it is
# as cheap as they are, and shows what the agent's mechanisms achieve on their own.
CODE_AGENT = "agent-code"
CODE_AGENT_OPTIONS = {"reflection": False, "memory": False, "shortlist": 1}


def _opts(args, methods, seeds, trials, out, **kw):
    from virtualmle.bench.runner import BenchOptions

    return BenchOptions(methods=methods, table=args.table, trials=trials, seeds=seeds, out=out,
                        storage=f"journal://{(out / 'studies.log').resolve()}", progress=False, **kw)


def _progress(label):
    def on_run(method, seed, i, total):
        print(f"[{label} {i + 1}/{total}] {method} seed {seed}", file=sys.stderr, flush=True)
    return on_run


def stage_classic(args):
    from virtualmle.bench.runner import run_bench

    return run_bench(_opts(args, [*CLASSIC, "agent"], args.seeds, args.trials, args.work / "classic",
                           agent_options=CODE_AGENT_OPTIONS), on_run=_progress("classic"))


def stage_full(args):
    """The same methods with ``--table-space full``: they search the shipped 13-parameter space
    and every parameter the table holds constant snaps back (a space with inert dimensions)."""
    from virtualmle.bench.runner import run_bench

    return run_bench(_opts(args, [*CLASSIC, "agent"], args.seeds, args.trials, args.work / "full",
                           agent_options=CODE_AGENT_OPTIONS, table_space="full"), on_run=_progress("full"))


def stage_llm(args):
    from virtualmle.bench.runner import run_bench

    return run_bench(_opts(args, LLM, args.llm_seeds, args.llm_trials, args.work / "llm"), on_run=_progress("llm"))


def stage_transfer(args):
    from virtualmle.bench.transfer import run_transfer

    o = _opts(args, ["agent"], args.transfer_seeds, args.transfer_trials, args.work / "transfer",
              agent_options={"reflection": False})
    return run_transfer(o, sources=args.sources.split(","), source_trials=args.source_trials,
                        on_run=_progress("transfer"))


def _combined(classic, llm, args):
    """Classic and LLM runs in one result, against one target (97% of the best any run found)."""
    from virtualmle.bench.runner import BenchResult

    runs = list(classic.runs) + (list(llm.runs) if llm else [])
    best = max((r.best_value for r in runs if r.best_value is not None), default=None)
    opts = dict(classic.options)
    opts["methods"] = [*CLASSIC, CODE_AGENT, *(LLM if llm else [])]
    return BenchResult(options=opts, runs=runs, target=best * args.target_frac if best is not None else None,
                       best_any=best, table_best=classic.table_best)


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPU cores ({cpu}), {platform.system()}, no GPU; load average now {load}"


def _at(res, method: str, n: int, target: float | None) -> tuple[list[float], list[float], int, int]:
    """Per-seed best validation after n trials, the test metric of that choice, and how many runs
    reached the target within n trials (budget-matched comparison at n)."""
    bests, tests, reached, runs = [], [], 0, 0
    for r in res.runs:
        if r.method != method or not r.values:
            continue
        runs += 1
        vals = r.values[:n]
        done = [(v, i) for i, v in enumerate(vals) if v is not None]
        if done:
            bests.append(max(done)[0])
        if target is not None and any(v is not None and v >= target for v in vals):
            reached += 1
    return bests, tests, reached, runs


def _by_budget(res, budgets=(5, 10, 15, 20, 30)) -> list[str]:
    """Markdown table: best validation after n trials per method (mean ± se), for several n."""
    from virtualmle.bench.report import fmt
    from virtualmle.bench.stats import mean as _mean, se as _se

    shown = [n for n in budgets if any(r.trials >= n for r in res.runs)]
    lines = ["| method | " + " | ".join(f"after {n}" for n in shown) + " |", "|---|" + "---|" * len(shown)]
    for m in res.methods():
        cells = []
        for n in shown:
            b, _, _, _ = _at(res, m, n, None)
            ok = [r for r in res.runs if r.method == m and r.trials >= n]
            cells.append(f"{fmt(_mean(b))} ± {fmt(_se(b))}" if b and ok else "-")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def _verdicts(res) -> list[str]:
    """Plain statements comparing the LLM methods with TPE, random and the default, at the same
    number of trials (the LLM methods' budget), from the numbers."""
    from virtualmle.bench.report import fmt
    from virtualmle.bench.stats import mean as _mean, se as _se

    out = []
    methods = res.methods()
    for llm in [CODE_AGENT, *LLM]:
        if llm not in methods:
            continue
        n = max(r.trials for r in res.runs if r.method == llm)
        a, _, ra, na = _at(res, llm, n, res.target)
        for other in ("tpe", "random", "default"):
            if other not in methods:
                continue
            b, _, rb, nb = _at(res, other, n, res.target)
            if not a or not b:
                continue
            diff = _mean(a) - _mean(b)
            se = ((_se(a) or 0) ** 2 + (_se(b) or 0) ** 2) ** 0.5
            word = ("beats" if diff > 2 * se else "loses to" if diff < -2 * se else "is within noise of")
            out.append(f"- **{llm} {word} {other}** at the same budget of {n} trials: best validation "
                       f"{fmt(_mean(a))} ({len(a)} seeds) vs {fmt(_mean(b))} ({len(b)} seeds), difference "
                       f"{diff:+.4f} (2 se = {2 * se:.4f}); reached the target within {n} trials in {ra}/{na} vs "
                       f"{rb}/{nb} runs.")
    return out


def _flags() -> str:
    """The command line's flags, less ``--stage`` (which stage wrote the page does not change it)."""
    out, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--stage":
            skip = True
            continue
        if a.startswith("--stage="):
            continue
        out.append(a)
    return " ".join(out)


def _pick_positions(work: Path) -> tuple[int, int, int] | None:
    """(LLM picks, picks of the first option shown, trials without a pick call) over the agent's
    LLM-stage studies. The options are shown in a random order, so a model without position bias
    picks the first one about 1/k of the time."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    log = work / "llm" / "studies.log"
    if not log.is_file():
        return None
    storage = JournalStorage(JournalFileBackend(str(log)))
    picks = first = skipped = 0
    for summary in optuna.get_all_study_summaries(storage):
        if "-agent-" not in summary.study_name:
            continue
        for t in optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False):
            pick = (t.user_attrs.get("agent") or {}).get("pick") or {}
            if pick.get("by") == "llm":
                picks += 1
                first += int(pick.get("position") == 0)
            elif pick:
                skipped += 1
    return picks, first, skipped


def _llm_seconds_per_call(llm) -> float | None:
    calls = sum(int(r.llm.get("calls", 0)) for r in llm.runs) if llm else 0
    return sum(float(r.llm.get("seconds", 0.0)) for r in llm.runs) / calls if calls else None


def write_page(args, classic, llm, transfer, peer, full=None):
    from virtualmle.bench.plots import plot_curves
    from virtualmle.bench.report import describe, fmt, markdown_table

    res = _combined(classic, llm, args)
    pics = ROOT / "docs" / "results"
    pics.mkdir(parents=True, exist_ok=True)
    pngs = plot_curves(res, pics, prefix="tabular_")
    from virtualmle.bench.table import TrialTable

    table = TrialTable.load(args.table)
    rel = os.path.relpath(args.table, ROOT)
    meta = table.meta
    L = []
    L += ["# Results", "",
          "Regenerate this page (and docs/results/*.png) with one command:", "",
          "```", "VIRTUALMLE_DATA_DIR=/work/shared/data python benchmarks/results.py", "```", "",
          f"(flags used for this version: `{_flags() or '(defaults)'}`; studies are stored in "
          f"`{os.path.relpath(args.work, ROOT)}/`, every stage resumes). Page written "
          f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} on: {_machine()}.", "",
          "## The trial table", "",
          f"`{rel}`: SASRec on {meta['dataset']}, the Grid-729 axes `{meta['axes']}` (everything else at the "
          f"released defaults: `{meta['constants']}`), each point trained once, for real, by "
          f"`virtualmle search --method grid --workers 2`. Fidelity `{meta['fidelity']}`: the first "
          f"{table.fidelity.get('slice_users')} users and {table.fidelity.get('max_epochs')} epochs, chosen so "
          f"that the grid can run on this 2-core machine shared with other jobs. Points: {meta.get('points')}; "
          f"compute {meta.get('compute_seconds')}; built {meta.get('date')} on {meta.get('machine')}. "
          f"Best point: validation ndcg@10 {fmt(table.best.valid['ndcg@10'] if table.best else None)}.", ""]
    n_points = len(table.rows)
    if n_points < 729:
        L += [f"**The table is partial ({n_points} of 729 points).** The grid runs in a seeded random order, so "
              "the points are a uniform random subset; a proposal for a missing point snaps to the nearest "
              "point the table has and is counted in the 'snapped trials' column (so snap rates here are "
              "higher than they will be with the full table). Finish it by running the same `virtualmle "
              "search` command again (it resumes) and `benchmarks/build_table.py`, then this script.", ""]
    L += ["Caveats of a low-fidelity table: with 1000 users the validation metric of one configuration has "
          "a standard error of roughly 10-20% of its value, and 3 epochs favour large learning rates; the "
          "table ranks configurations at this fidelity, not at full scale. A table has one value per point, "
          "so the `default` control (the same configuration with other seeds) is flat here: it shows the "
          "default's value, not seed noise.", ""]
    L += ["## Tabular benchmark: budget-matched, multi-seed", "", describe(res), "",
          f"Classic methods: {classic.options['seeds']} seeds x {classic.options['trials']} trials. "
          + (f"LLM methods: {llm.options['seeds']} seeds x {llm.options['trials']} trials (the embedded "
             f"SmolLM2-135M took {_llm_seconds_per_call(llm) or float('nan'):.1f} s per call on this CPU, so "
             "they get fewer seeds)." if llm else "LLM methods: not run."), "",
          markdown_table(res), ""]
    for p in pngs:
        L.append(f"![{p.stem}](results/{p.name})")
    L += ["", "Best validation ndcg@10 after n trials (mean ± se over each method's seeds): which method "
          "leads depends on the budget.", "", *_by_budget(res), ""]
    L += ["", "Columns: best validation ndcg@10 at the end of the budget (mean ± standard error over "
          "seeds); the test ndcg@10 of the configuration each run chose by validation (read from the stored "
          "`test` user attribute, never used to choose); runs that reached the target; trials and summed "
          "trial seconds (the seconds the real trials took) until the target was first reached; share of "
          "trials answered by a snapped lookup; LLM calls, tokens and cost from each study's "
          "`llm_log.jsonl` (cost 0: a local model); wall seconds per run (in table mode that is the method's "
          "own time plus storage).", ""]
    rows = classic.summary()  # same budget and seeds: comparable
    by_valid = max((r for r in rows if r["best_valid_mean"] is not None), key=lambda r: r["best_valid_mean"], default=None)
    by_test = max((r for r in rows if r["test_of_best_mean"] is not None), key=lambda r: r["test_of_best_mean"], default=None)
    if by_valid and by_test and by_valid["method"] != by_test["method"]:
        L += [f"Validation is not test at this fidelity: **{by_valid['method']}** finds the best validation value "
              f"({fmt(by_valid['best_valid_mean'])}) among the classic methods, but the configurations it chooses score "
              f"{fmt(by_valid['test_of_best_mean'])} on test, below **{by_test['method']}**'s "
              f"{fmt(by_test['test_of_best_mean'])}. With 1000 validation users, the highest validation values "
              "are partly luck (winner's curse), so pushing validation further is partly fitting noise; "
              "a larger user slice or averaging over seeds per point would fix the table, not the methods.", ""]
    L += ["### How the agent compares", "",
          "`agent-code` is the agent with every LLM step off (no reflection, no memory, the surrogate's top "
          "candidate taken without asking the LLM), run with the classic methods' seeds and budget; `agent` "
          "is the full hybrid agent with the embedded LLM. Every stage resumes: a complete study is not re-run, "
          "so after changing the agent or the table delete `runs/results` to measure again.", ""]
    verdicts = _verdicts(res)
    L += verdicts or ["- The LLM methods were not run for this version of the page."]
    n_llm = llm.options["trials"] if llm else None
    L += ["", "TPE's first 10 trials are Optuna's random start-up draws, seeded like `random`'s, so tpe and "
          "random coincide up to 10 trials. "
          + (f"The LLM methods are compared with the classic methods' first {n_llm} trials, on "
             f"{llm.options['seeds']} seeds against {classic.options['seeds']}, so their error bars are wider. "
             if llm else "")
          + "Each method's own time per run is in the `wall s / run` column (TPE's is about a second)."]
    if full is not None:
        L += ["", "### The same table searched over the shipped space (`--table-space full`)", "",
              "Here every method searches all 13 parameters of `sasrec.yaml`; the 7 the table holds constant "
              "(heads, optimizer, window, loss, negatives, ...) snap back to the table's value, so they are "
              "inert dimensions: a method that spends trials on them learns nothing. Real spaces have such "
              "parameters too (ones that do not matter for this dataset), which is what this tests. "
              f"{full.options['seeds']} seeds x {full.options['trials']} trials.", "",
              markdown_table(full), "", *_by_budget(full), ""]
        for p in plot_curves(full, pics, prefix="full_"):
            L.append(f"![{p.stem}](results/{p.name})")
        L += [""]
        L += _verdicts(full) or ["- (no agent-code runs)"]
        L += [""]
    pp = _pick_positions(args.work) if llm else None
    if pp and pp[0]:
        L += ["", f"Position bias of the embedded model: in the agent's runs it was asked to pick {pp[0]} times "
              f"(another {pp[2]} trials had no near tie, so the surrogate's top ran without a call), and it "
              f"chose the first option shown {pp[1]} times ({100 * pp[1] / pp[0]:.0f}%). The options are "
              "shuffled before they are shown, so its pick works as a random tie-break among near-tied "
              "candidates, as FINDINGS.md predicts for a model of this size."]
    L += ["", "What we think would change the picture (not measured here):",
          "- The decision-maker: the embedded 135M model mostly picks the first option it is shown "
          "(FINDINGS.md), so in hybrid mode the agent is the code's surrogate + diagnostics with an expensive "
          "tie-breaker. A capable model behind `--llm` with a wider `--shortlist` is what the paper measures.",
          "- The space: on this 6-axis table the agent's one- and two-parameter moves from the default need "
          "several steps to reach a corner (lr 1e-3 with large hidden); its global candidates (Latin-hypercube "
          "draws and TPE suggestions ranked by expected improvement) close most of that gap. Over the full "
          "space (above) the early trials are its weak point: until the per-parameter length scales (ARD, "
          "from 8 trials) have found the inert parameters, one-parameter moves on them look as promising "
          "as any other.",
          "- Small budgets: trial 1 is the default by design and the next ones are mostly local moves "
          "around it, so where that is slow (over the full space, or when the LLM's biased pick takes a "
          "weaker near-tie) the agent trails the methods that sample the whole space from the start over "
          "the first trials; the by-budget tables show where. Starting from a transferred configuration, "
          "or a few space-filling trials first, would change that.",
          "- Fidelity: at 3 epochs 'underfitting, raise lr' is almost always the right diagnosis; a "
          "higher-fidelity table (e.g. on a GPU) tests whether the agent's reasoning generalises.",
          "- Seeds: few LLM seeds give wide error bars; the table makes more seeds cheap except for LLM time.", ""]
    L += ["## Transfer experiment", ""]
    if transfer is not None:
        L += [transfer.markdown(), "",
              "Both arms run the agent without its Reflect step (`reflection=False`: the LLM still picks "
              "among near-tied candidates) to fit the LLM time on this CPU; insights and the cognition "
              "summaries come from the code's keep/discard evidence. Each seed's `auto` arm starts from a "
              "copy of the source bank, each `none` arm from an empty bank. The paper reports about one third "
              "of the trials with transfer. Here the runs " + _transfer_word(transfer, transfer.options.get("trials") or 0)
              + ". Read it with its caveats: the sources are trained at the table's fidelity (1000 users, 3 "
              "epochs), so source and target share that fidelity's biases; the transferred knowledge reaches "
              "the target study both as rules and as prior trials for the surrogate, and no ablation here "
              "separates the two (the distilled rules are mixed: `virtualmle memory show --memory "
              f"{os.path.relpath(args.work, ROOT)}/transfer/transfer/bank-sources` lists them, some of which "
              "point the wrong way on this table); and the sources are short "
              f"({args.source_trials} trials each). Sources and target at full fidelity are the test that "
              "would settle it.", ""]
    else:
        L += ["Not run for this version of the page (`--stage transfer`).", ""]
    L += ["## Peer speed: our SASRec vs RecBole's SASRec", ""]
    if peer:
        o, r = peer.get("ours", {}), peer.get("recbole", {})
        L += [f"`benchmarks/peer_speed.py --slice-users {peer.get('slice_users')} --epochs {peer.get('epochs')}` "
              f"(same data, hidden 64, 2 blocks, 2 heads, full softmax CE, batch 256, max_len 50, "
              f"{peer.get('threads')} torch threads); load average {peer.get('load_before')} before, "
              f"{peer.get('load_after')} after.", "",
              "| | seconds per epoch (training + validation) | validation ndcg@10 after the epochs |",
              "|---|---|---|",
              f"| ours (torch {o.get('torch')}) | {', '.join(f'{s:.1f}' for s in o.get('epoch_s', []))} | "
              f"{fmt((o.get('valid') or {}).get('ndcg@10'))} |"]
        if "error" in r:
            L += ["", f"RecBole failed: ```{r['error'][-600:]}```"]
        else:
            per = [a + b for a, b in zip(r.get("train_epoch_s", []), r.get("valid_s", []))]
            L += [f"| RecBole 1.2.1 (torch {r.get('torch')}) | {', '.join(f'{s:.1f}' for s in per)} "
                  f"(training {', '.join(f'{s:.1f}' for s in r.get('train_epoch_s', []))}) | "
                  f"{fmt((r.get('valid') or {}).get('ndcg@10'))} |", "",
                  f"RecBole takes {peer.get('ratio', float('nan')):.1f}x our seconds per epoch. Its epoch is "
                  f"{r.get('train_samples')} training samples (every prefix of every sequence), ours one pass "
                  "over the sequences with every position supervised, so per epoch RecBole does more forward "
                  "passes and more optimiser steps (see the validation column: one epoch is not the same "
                  "progress for both; time to equal quality was not measured); RecBole ran in its own venv (`setuptools<70`, `numpy<2`, `pandas<2.3`; its pip "
                  "resolution installed a CUDA build of torch, used on CPU)."]
        L += ["", "Timings on a shared, loaded machine are noisy (the load averages above); the ratio, "
              "measured back to back, is the number to read."]
    else:
        L += ["Not measured for this version (run `benchmarks/peer_speed.py --json FILE`, pass `--peer-json FILE`)."]
    text = ("\n".join(L) + "\n").replace(str(ROOT) + "/", "")
    path = ROOT / "docs" / "results.md"
    text = keep_hand_written(path, text)
    from virtualmle.files import write_atomic

    write_atomic(path, text)
    print(f"wrote {path} and {', '.join(p.name for p in pngs)}", file=sys.stderr)


HAND_WRITTEN = "## Memory an ML engineer would sign"
FULL_FIDELITY = "## Full fidelity: search methods at equal compute"  # benchmarks/full_fidelity_report.py
PEER = "## Peer speed"


def keep_hand_written(path: Path, text: str) -> str:
    """Carry the sections this script does not produce into `text`, before the peer-speed
    section: the hand-written memory section (measured outside this script) and the full-fidelity
    section (written by benchmarks/full_fidelity_report.py); a regeneration must not drop them."""
    old = path.read_text() if path.is_file() else ""
    for heading in (HAND_WRITTEN, FULL_FIDELITY):
        if heading not in old or heading in text:
            continue
        start = old.index(heading)
        end = old.find("\n## ", start + len(heading))
        section = old[start:end + 1 if end >= 0 else len(old)].rstrip() + "\n\n"
        at = text.find(PEER)
        text = text[:at] + section + text[at:] if at >= 0 else text.rstrip() + "\n\n" + section
    return text


def _transfer_word(t, budget: int) -> str:
    rows = {r["transfer"]: r for r in t.rows()}
    a, n = rows.get("auto"), rows.get("none")
    if not a or not n:
        return "not measurable (an arm is missing)"

    def censored(r):  # unreached runs counted as budget + 1: a lower bound for them
        xs = [budget + 1 if x is None else x for x in r["per_seed_trials_to_target"]]
        return sum(xs) / len(xs) if xs else float("nan")

    if budget < 1 or not a["runs"] or not n["runs"]:
        return "not measurable (no budget or no runs recorded)"
    head = f"reached the target in {a['reached']}/{a['runs']} runs with transfer and {n['reached']}/{n['runs']} without"
    if not a["reached"] and not n["reached"]:
        return head + " (no run reached it, so trials to target are not measurable)"
    ca, cn = censored(a), censored(n)
    text = (f"{head}; counting a run that never reached it as {budget + 1} trials (a lower bound for that run), "
            f"the mean trials to target are {'' if a['reached'] == a['runs'] else 'at least '}{ca:.1f} with "
            f"transfer and {'' if n['reached'] == n['runs'] else 'at least '}{cn:.1f} without")
    if a["reached"] == a["runs"]:  # the transfer arm's mean is exact, the other's a lower bound
        text += f", a ratio of at most {ca / cn:.2f}"
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", default="all", choices=("all", "classic", "full", "llm", "transfer", "page"))
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "results")
    ap.add_argument("--seeds", type=int, default=10, help="seeds of the classic methods (default 10)")
    ap.add_argument("--trials", type=int, default=30, help="budget per run (default 30)")
    ap.add_argument("--llm-seeds", type=int, default=6, help="seeds of agent / OPRO (default 6)")
    ap.add_argument("--llm-trials", type=int, default=30, help="budget per agent / OPRO run (default 30)")
    ap.add_argument("--transfer-seeds", type=int, default=10)
    ap.add_argument("--transfer-trials", type=int, default=15)
    ap.add_argument("--source-trials", type=int, default=12)
    ap.add_argument("--sources", default="baby,pet_supplies", help="source datasets (default: the paper's other two)")
    ap.add_argument("--target-frac", type=float, default=0.97)
    ap.add_argument("--peer-json", type=Path, default=ROOT / "runs" / "results" / "peer_speed.json")
    ap.add_argument("--no-llm", action="store_true", help="page without the agent / OPRO runs")
    ap.add_argument("--no-transfer", action="store_true", help="page without the transfer experiment")
    ap.add_argument("--no-full", action="store_true", help="page without the --table-space full stage")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    single = {"classic": stage_classic, "full": stage_full, "llm": stage_llm, "transfer": stage_transfer}
    if args.stage in single:
        single[args.stage](args)
        return 0
    classic = stage_classic(args)
    full = None if args.no_full else stage_full(args)
    llm = None if args.no_llm else stage_llm(args)
    transfer = None if args.no_transfer else stage_transfer(args)
    peer = json.loads(args.peer_json.read_text()) if args.peer_json.is_file() else None
    write_page(args, classic, llm, transfer, peer, full)
    return 0


if __name__ == "__main__":
    sys.exit(main())
