"""The full-fidelity section of docs/results.md, from the committed study journals (issue 13 §4).

Reads `benchmarks/tables/ff_search/methods.journal` (written by benchmarks/full_fidelity_search.sh,
resumable across sessions), and writes the section "Full fidelity: search methods at equal
compute" into docs/results.md (replacing the previous version of it; benchmarks/results.py keeps
it when it regenerates the page) and the plot docs/results/ff_best_vs_compute.png:

    python benchmarks/full_fidelity_report.py [--journal PATH] [--transfer-journal PATH]
        [--hstu-journal PATH] [--current-journal PATH ...] [--page docs/results.md]

With the transfer step's journal (`transfer.journal`) it adds the transfer subsection: the source
studies and the Beauty arms with and without transfer, finished or in progress, and per arm the
compute to the target. With step 3's journal (`hstu.journal`) it adds the HSTU subsection. The
runs of steps 4-6 (`agent_current.journal`: the agent of today on step 1's setting;
`tpe_current.journal`: TPE + Hyperband again, on the same machine as step 4;
`agent_early.journal`: the agent with early promotion) and of step 7 (`agent_step7.journal`: the
agent after the fixes step 6 called for), of step 8 (`agent_step8.journal`: step 7 with one of
them undone), of step 10 (`agent_step10.journal`: step 8's agent after three more fixes) and of step 9
(`agent_code.journal`: step 10's agent with its LLM steps off), of step 11 (`agent_step11.journal`:
step 10's agent after two fixes in the loop), of step 12 (`agent_step12.journal`: step 11's agent
with promotions that only confirm cut short) and of step 13 (`agent_seeds.journal`,
`tpe_seeds.journal`: the agent of today and TPE + Hyperband on seeds 3-5) join the methods table as `<method> (current)`,
`agent-screen (early promotion)`, `agent-screen (step 7)`, `agent-screen (step 8)`,
`agent-code-screen (step 9)`, `agent-screen (step 10)`, `agent-screen (step 11)` and
`agent-screen (step 12)`, `agent-screen (seeds 3-5)` and `tpe+hyperband (seeds 3-5)`, measured
against step 1's target.

Per run: the configuration chosen on validation (the best completed trial, or one the compute
budget ended: `stored.choice_value`), its test NDCG@10 / HR@10 (never used to choose), the compute
really spent, and the compute until the best validation so far first reached 97% of the best any
finished run found. Compute is training seconds summed over trials, in the order the trials
finished (two workers spend it twice as fast as the wall clock). A run whose budget is not spent
yet is listed as in progress and left out of the means.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from virtualmle.bench.stats import mean, se
from virtualmle.search.stored import choice_value, counts, summarize

ROOT = Path(__file__).resolve().parent.parent
JOURNAL = ROOT / "benchmarks" / "tables" / "ff_search" / "methods.journal"
PAGE = ROOT / "docs" / "results.md"
HEADING = "## Full fidelity: search methods at equal compute"
NAME = re.compile(r"^bench-(?P<data>[a-z_]+)-(?P<model>[a-z]+)-(?P<space>[a-z0-9_]+)-(?P<method>.+)-s(?P<seed>\d+)$")
TARGET_FRAC = 0.97
TRANSFER_JOURNAL = ROOT / "benchmarks" / "tables" / "ff_search" / "transfer.journal"
HSTU_JOURNAL = ROOT / "benchmarks" / "tables" / "ff_search" / "hstu.journal"
CURRENT_JOURNALS = [ROOT / "benchmarks" / "tables" / "ff_search" / name
                    for name in ("agent_current.journal", "tpe_current.journal", "agent_early.journal",
                                 "agent_step7.journal", "agent_step8.journal", "agent_code.journal",
                                 "agent_step10.journal", "agent_step11.journal", "agent_step12.journal",
                                 "agent_seeds.journal", "tpe_seeds.journal")]
# The row label of a later step's runs (default: current).
LABELS = {"agent_early": "early promotion", "agent_step7": "step 7", "agent_step8": "step 8",
          "agent_code": "step 9", "agent_step10": "step 10", "agent_step11": "step 11",
          "agent_step12": "step 12", "agent_seeds": "seeds 3-5", "tpe_seeds": "seeds 3-5"}
# Rows pooled over seeds 0-5 (step 13 added seeds 3-5): the agent of today's code path (step 12's
# seeds 0-2; its one later change, the narrowed past-peak rule, did not fire there) and TPE +
# Hyperband (step 5's seeds 0-2, on the machine of steps 4-12).
POOLS = {"agent-screen, seeds 0-5 (step 12 + seeds 3-5)": ("agent-screen (step 12)", "agent-screen (seeds 3-5)"),
         "tpe+hyperband, seeds 0-5 (current + seeds 3-5)": ("tpe+hyperband (current)", "tpe+hyperband (seeds 3-5)")}
# The transfer step's studies (bench/transfer.py): sources, then the target's arms.
SOURCE = re.compile(r"^transfer-src-(?P<method>[a-z_]+)-[a-z]+-[a-z0-9_]+-s(?P<seed>\d+)$")
ARM = re.compile(r"^bench-transfer-[a-z_]+-[a-z]+-(?P<method>auto|rules|trials|none)-[a-z0-9_]+-s(?P<seed>\d+)$")
SHOWN = ("loss", "hidden", "blocks", "ffn_mult", "dropout", "lr", "batch_size", "max_epochs", "patience",
         "pos_enc", "prior_transition", "prior_cooc")


@dataclass
class Run:
    method: str
    seed: int
    budget: float | None
    spent: float
    trials: int
    outcomes: dict[str, int]
    best_valid: float | None
    test: dict[str, float]
    params: dict[str, Any]
    curve: list[tuple[float, float]]  # (compute seconds when a trial finished, best valid so far)
    in_budget: tuple[float, float | None] | None = None  # (valid, test) of the choice among trials done within the budget

    @property
    def finished(self) -> bool:
        return self.budget is not None and self.spent >= self.budget

    def to_reach(self, target: float) -> float | None:
        return next((c for c, v in self.curve if v >= target), None)


def read_run(study: optuna.Study, method: str, seed: int) -> Run:
    """One stored study as a `Run`: its choice, its compute and its best-so-far curve."""
    trials = [t for t in study.get_trials(deepcopy=False) if counts(t)]
    trials.sort(key=lambda t: (t.datetime_complete or t.datetime_start, t.number))
    spent, best, curve, in_budget = 0.0, None, [], None
    budget = study.user_attrs.get("time_budget")
    for t in trials:
        spent += float(t.user_attrs.get("seconds") or 0.0)
        value = choice_value(t, "ndcg@10")
        if value is not None and (best is None or value > best):
            best = value
            if budget is None or spent <= budget:
                in_budget = (value, (t.user_attrs.get("test") or {}).get("ndcg@10"))
        if best is not None:
            curve.append((spent, best))
    s = summarize(study, method, "ndcg@10", len(trials))
    outcomes: dict[str, int] = {}
    for t in trials:
        key = _outcome(t)
        outcomes[key] = outcomes.get(key, 0) + 1
    return Run(method, seed, budget, spent, len(trials), outcomes, s.best_value, s.best_test, s.best_params,
               curve, in_budget)


def read_runs(journal: Path, pattern: re.Pattern[str] = NAME) -> list[Run]:
    """The journal's studies whose names match ``pattern`` (its ``method`` and ``seed`` groups)."""
    storage = JournalStorage(JournalFileBackend(str(journal)))
    runs = []
    for summary in optuna.get_all_study_summaries(storage):
        m = pattern.match(summary.study_name)
        if m is None:
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        runs.append(read_run(study, m["method"], int(m["seed"])))
    return sorted(runs, key=lambda r: (r.method, r.seed))


def _outcome(t: FrozenTrial) -> str:
    """complete, failed, or who stopped a pruned trial (screen, pruner, budget, method)."""
    if t.state == TrialState.PRUNED:
        return str(t.user_attrs.get("stopped_by") or "pruned")
    if t.state == TrialState.COMPLETE:
        return "complete"
    return str(t.user_attrs.get("outcome") or "failed")


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _min(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f}"


def _config(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} {params[k]:g}" if isinstance(params[k], float) else f"{k} {params[k]}"
                     for k in SHOWN if k in params)


def section(runs: list[Run], plot: str | None, current: list[Run] = ()) -> str:  # type: ignore[assignment]
    """The methods table; ``current`` (steps 4-6) is measured against the same target."""
    done = [r for r in runs if r.finished]
    best_any = max((r.best_valid for r in done if r.best_valid is not None), default=None)
    target = None if best_any is None else TARGET_FRAC * best_any
    L = [HEADING, "",
         "Beauty x SASRec on the full data (22,363 users, all epochs a trial chooses), the `extended` space "
         "(training length, losses, the published-code switches, structure, priors), 45 minutes of compute "
         "per run, two one-thread trials at once, on the 2-core CPU machine. Methods: the agent (screening "
         "5 epochs, then promoting the best from its checkpoint; LLM steps on the embedded model), TPE with "
         "Optuna's HyperbandPruner, random search. Written by `python benchmarks/full_fidelity_report.py` "
         "from `benchmarks/tables/ff_search/methods.journal` (`benchmarks/full_fidelity_search.sh` runs and "
         "resumes the studies). The test metrics are those of the configuration each run chose on "
         "validation; nothing is chosen on test.", ""]
    if target is not None:
        L += [f"Target for compute-to-reach: {TARGET_FRAC:.2f} x the best validation NDCG@10 any finished run "
              f"found ({best_any:.4f}) = {target:.4f}.", ""]
    L += ["A run spends a little more than 45 minutes: a trial in flight when the budget runs out ends "
          "its epoch and validates. Studies started before the budget could stop a trial mid-epoch "
          "(seed 0 of every method) overshot more: there a trial in flight ran to its next validation, "
          "up to half an hour later. The compute column says what each run spent. The columns "
          "\"within 45 min\" hold the choice among the trials that had finished when 45 minutes "
          "were spent, the fair comparison; the others hold the run's final choice.", "",
          "| method | finished runs | best valid NDCG@10 (mean ± se) | test NDCG@10 of chosen (mean ± se) | "
          "test HR@10 of chosen (mean) | within 45 min: valid / test NDCG@10 (mean) | compute spent, min (mean) "
          "| reached target | compute to target, min (mean) |",
          "|---|---|---|---|---|---|---|---|---|"]
    runs = list(runs) + list(current)
    done += [r for r in current if r.finished]
    for method in sorted({r.method for r in runs}):
        rs = [r for r in done if r.method == method]
        valid = [r.best_valid for r in rs if r.best_valid is not None]
        test = [r.test["ndcg@10"] for r in rs if "ndcg@10" in r.test]
        hr = [r.test["hr@10"] for r in rs if "hr@10" in r.test]
        reach = [r.to_reach(target) for r in rs] if target is not None else []
        hit = [x for x in reach if x is not None]
        cut_v = [r.in_budget[0] for r in rs if r.in_budget]
        cut_t = [r.in_budget[1] for r in rs if r.in_budget and r.in_budget[1] is not None]
        L.append(f"| {method} | {len(rs)} | {_f(mean(valid))} ± {_f(se(valid))} | {_f(mean(test))} ± {_f(se(test))} "
                 f"| {_f(mean(hr))} | {_f(mean(cut_v))} / {_f(mean(cut_t))} | {_min(mean([r.spent for r in rs]))} "
                 f"| {len(hit)}/{len(rs)} | {_min(mean(hit))} |")
    L += pooled(done, target)
    L += ["", "Every run, finished or not:", "",
          "| method | seed | status | trials (how they ended) | compute, min | best valid | test NDCG@10 | test HR@10 | "
          "chosen configuration (some of its parameters) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        status = "finished" if r.finished else f"in progress ({_min(r.spent)} of {_min(r.budget)} min)"
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r.outcomes.items()))
        L.append(f"| {r.method} | {r.seed} | {status} | {r.trials}{f' ({outcomes})' if outcomes else ''} | {_min(r.spent)} | {_f(r.best_valid)} "
                 f"| {_f(r.test.get('ndcg@10'))} | {_f(r.test.get('hr@10'))} | {_config(r.params)} |")
    if current:
        L += ["", "The `(current)` rows ran later, on the machine of the HSTU runs, on the same setting and seeds: "
              "`agent-screen (current)` is the agent of today (step 4 of `benchmarks/full_fidelity_search.sh`, "
              "`agent_current.journal`), `tpe+hyperband (current)` is step 1's TPE + Hyperband again on that "
              "machine (step 5, `tpe_current.journal`), the baseline to compare steps 4 and 6 with; "
              "`agent-screen (early promotion)` (step 6, `agent_early.journal`) adds to step 4's agent the "
              "early promotion of a screen that matches the incumbent (docs/search.md); "
              "`agent-screen (step 7)` (`agent_step7.journal`) is step 6's agent after three fixes: a screen's "
              "cost is projected from its validated epochs' pace (start-up no longer counted as if every "
              "epoch paid it), a screen is spared when it is ahead of what the incumbent had by the same "
              "epoch, and a trial the method or the pruner stopped does not score its test split; "
              "`agent-screen (step 8)` (`agent_step8.journal`) is step 7's agent with the second of those "
              "fixes undone (a screen is ahead only at or above the incumbent's best); "
              "`agent-code-screen (step 9)` (`agent_code.journal`) is step 10's agent with every LLM step off "
              "(no reflection, no memory, the surrogate's top candidate); "
              "`agent-screen (step 10)` (`agent_step10.journal`) is step 8's agent after three more fixes: a "
              "screen falling since its peak below the incumbent's best is not promoted, a screen that ran "
              "its epochs does not score its test split, and a parameter whose change alone repeated the "
              "incumbent's curve is left alone (flat); "
              "`agent-screen (step 11)` (`agent_step11.journal`) is step 10's agent after two fixes in the "
              "loop: a screen the compute budget cuts may be the study's choice (as any run cut at the "
              "deadline), and a screen the cost cap stops mid-epoch ends without validating the cut epoch; "
              "`agent-screen (step 12)` (`agent_step12.journal`) is step 11's agent with promotions that "
              "would only confirm their screen cut short: one past its peak ends at once and is tested at "
              "its best epoch, a flat one continues with patience 5 at most (`confirming`); "
              "`agent-screen (seeds 3-5)` and `tpe+hyperband (seeds 3-5)` (step 13, `agent_seeds.journal`, "
              "`tpe_seeds.journal`) are the agent of today (step 12's, its past-peak rule narrowed to "
              "configurations that stop early) and TPE + Hyperband on seeds 3-5. "
              "What changed in the agent since the `agent-screen` rows: candidates with "
              "a decaying learning-rate schedule are screened too; parameters a configuration never reads "
              "do not make a new candidate (`virtualmle/inert.py`); a screen far costlier than the study's "
              "median screen is stopped so its round can promote (`--screen-cost`, docs/search.md); the "
              "one-pass softmax and fused Adam (docs/training.md). The target stays the one above."]
    if plot:
        L += ["", f"![best validation NDCG@10 against compute]({plot})"]
    return "\n".join(L) + "\n"


def pooled(done: list[Run], target: float | None) -> list[str]:
    """The `POOLS` rows (finished runs only), and the difference of their mean tests."""
    rows, tests = [], {}
    for label, methods in POOLS.items():
        rs = [r for r in done if r.method in methods]
        if not rs:
            continue
        valid = [r.best_valid for r in rs if r.best_valid is not None]
        tests[label] = test = [r.test["ndcg@10"] for r in rs if "ndcg@10" in r.test]
        hit = [x for x in (r.to_reach(target) for r in rs) if x is not None] if target is not None else []
        rows.append(f"| {label} | {', '.join(str(r.seed) for r in sorted(rs, key=lambda r: r.seed))} "
                    f"| {_f(mean(valid))} ± {_f(se(valid))} | {_f(mean(test))} ± {_f(se(test))} "
                    f"| {len(hit)}/{len(rs)} |")
    if not rows:
        return []
    L = ["", "Pooled over seeds (finished runs; step 13 adds seeds 3-5 to the agent of step 12 and to "
         "TPE + Hyperband of step 5). Seeds 3-5 ran on a slower CPU than seeds 0-2 (the default's epoch "
         "11.2 s against 6.3-7.2 s), so their 45 minutes hold fewer epochs: within step 13 agent and TPE "
         "are on one machine, across the pool they are not (docs/full_fidelity.md).", "",
         "| pool | seeds | best valid NDCG@10 (mean ± se) | test NDCG@10 of chosen (mean ± se) | reached target |",
         "|---|---|---|---|---|", *rows]
    pools = list(tests.values())
    if len(pools) == 2 and all(len(t) >= 2 for t in pools):
        ta, tb = pools
        diff, err = mean(ta) - mean(tb), (se(ta) ** 2 + se(tb) ** 2) ** 0.5
        L += ["", f"Difference of the mean tests (first pool minus second): {diff:+.4f} ± {err:.4f} (se of the "
                  f"difference, unpaired: a seed means nothing shared across methods)."]
    return L


def transfer_section(sources: list[Run], arms: list[Run], target: float | None,
                     agent_runs: list[Run]) -> str:
    """The transfer step so far: the source studies, then Beauty with (auto) and without (none)."""
    L = ["### Transfer at full fidelity", "",
         "Agent studies on Baby and Pet Supplies (45 minutes of compute each, the same space and "
         "screening) are distilled into one memory bank; then Beauty is tuned with transfer (`auto`: the "
         "sources' rules and trials) and without (`none`: an empty bank), 45 minutes per run, 3 seeds. "
         "Read from `benchmarks/tables/ff_search/transfer.journal`. The goal: the `auto` arm reaches the "
         "target above in at most half the compute of the runs without transfer. The agent runs of the "
         "table above are a second arm without transfer (an earlier version: decaying learning-rate "
         "schedules were not screened then).", "",
         "| source | status | trials (how they ended) | compute, min | best valid NDCG@10 |", "|---|---|---|---|---|"]
    for r in sources:
        status = "finished" if r.finished else f"in progress ({_min(r.spent)} of {_min(r.budget)} min)"
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r.outcomes.items()))
        L.append(f"| {r.method} | {status} | {r.trials} ({outcomes}) | {_min(r.spent)} | {_f(r.best_valid)} |")
    L += ["", "| Beauty arm | seed | status | trials | compute, min | best valid | test NDCG@10 of chosen "
          "| compute to target, min |", "|---|---|---|---|---|---|---|---|"]
    if not arms:
        L.append("| (not started) | | | | | | | |")
    for r in [*arms, *(replace(a, method="none (table above)") for a in agent_runs)]:
        status = "finished" if r.finished else f"in progress ({_min(r.spent)} of {_min(r.budget)} min)"
        reach = r.to_reach(target) if target is not None else None
        L.append(f"| {r.method} | {r.seed} | {status} | {r.trials} | {_min(r.spent)} | {_f(r.best_valid)} "
                 f"| {_f(r.test.get('ndcg@10'))} | {_min(reach)} |")
    if target is not None:
        L += ["", "Per arm, over its finished seeds (a seed that never reached the target counts as the "
              "whole budget, so the mean is not flattered by leaving it out):", "",
              "| arm | finished seeds | reached target | compute to target, min (mean) | best valid (mean) "
              "| test NDCG@10 of chosen (mean ± se) |", "|---|---|---|---|---|---|"]
        groups = {a.method: [r for r in arms if r.method == a.method and r.finished] for a in arms}
        groups["none (table above)"] = list(agent_runs)
        to = {}
        for name, rs in groups.items():
            if not rs:
                continue
            reach = [r.to_reach(target) for r in rs]
            to[name] = mean([x if x is not None else (r.budget or r.spent) for x, r in zip(reach, rs)])
            test = [r.test["ndcg@10"] for r in rs if "ndcg@10" in r.test]
            L.append(f"| {name} | {len(rs)} | {sum(x is not None for x in reach)}/{len(rs)} | {_min(to[name])} "
                     f"| {_f(mean([r.best_valid for r in rs if r.best_valid is not None]))} "
                     f"| {_f(mean(test))} ± {_f(se(test))} |")
        if to.get("auto") and to.get("none"):
            L += ["", f"Compute to target, `auto` / `none` (this journal's arms): "
                      f"{to['auto'] / to['none']:.2f} (goal: 0.50 or less)."]
    return "\n".join(L) + "\n"


def hstu_section(runs: list[Run]) -> str:
    """Beauty x HSTU, the extended space: the methods at equal compute, one seed each."""
    done = [r for r in runs if r.finished and r.best_valid is not None]
    target = TARGET_FRAC * max(r.best_valid for r in done) if done else None
    L = ["### HSTU at full fidelity", "",
         "Beauty x HSTU on the full data, the `extended` HSTU space, the same methods and budget (45 "
         "minutes of compute per run, two one-thread trials at once) as the SASRec table, one seed, on "
         "a 2-core machine slower than the one of the SASRec runs (same code, one epoch: release default 5.0-5.2 s against 4.6 s, `full_ce` 45.6 s against 27.4 s; docs/training.md). "
         "Read from "
         "`benchmarks/tables/ff_search/hstu.journal` (step 3 of `benchmarks/full_fidelity_search.sh`). "
         "These runs use the one-pass chunked softmax and the fused Adam of 2026-12-06 (docs/training.md); "
         "the SASRec runs above predate both.", ""]
    if target is not None:
        L += [f"Target: {TARGET_FRAC:.2f} x the best validation NDCG@10 of a finished HSTU run = {target:.4f}.", ""]
    L += ["| method | seed | status | trials (how they ended) | compute, min | best valid | within 45 min: "
          "valid / test NDCG@10 | test NDCG@10 / HR@10 of chosen | compute to target, min | chosen configuration "
          "(some of its parameters) |", "|---|---|---|---|---|---|---|---|---|---|"]
    if not runs:
        L.append("| (not started) | | | | | | | | | |")
    for r in runs:
        status = "finished" if r.finished else f"in progress ({_min(r.spent)} of {_min(r.budget)} min)"
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r.outcomes.items()))
        cut = f"{_f(r.in_budget[0])} / {_f(r.in_budget[1])}" if r.in_budget else "-"
        reach = r.to_reach(target) if target is not None else None
        L.append(f"| {r.method} | {r.seed} | {status} | {r.trials}{f' ({outcomes})' if outcomes else ''} "
                 f"| {_min(r.spent)} | {_f(r.best_valid)} | {cut} | {_f(r.test.get('ndcg@10'))} / "
                 f"{_f(r.test.get('hr@10'))} | {_min(reach)} | {_config(r.params)} |")
    return "\n".join(L) + "\n"


def plot_runs(runs: list[Run], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    colours = {}
    for r in runs:
        if not r.curve:
            continue
        c = colours.setdefault(r.method, f"C{len(colours)}")
        xs = [x / 60 for x, _ in r.curve]
        ax.step(xs, [v for _, v in r.curve], where="post", color=c, alpha=0.9 if r.finished else 0.4,
                label=r.method if r.method not in {lbl for lbl in ax.get_legend_handles_labels()[1]} else None)
    budgets = {r.budget for r in runs if r.budget}
    for b in budgets:
        ax.axvline(b / 60, ls="--", lw=1, color="grey")
    ax.set_xlabel("compute, minutes (training seconds summed over trials; dashed: the budget)")
    ax.set_ylabel("best validation NDCG@10 so far")
    ax.set_title("Beauty x SASRec, full data, extended space (faint: run in progress)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def replace_section(page: str, text: str) -> str:
    """`page` with its full-fidelity section replaced by `text` (appended when it has none)."""
    start = page.find(HEADING)
    if start < 0:
        return page.rstrip() + "\n\n" + text
    end = page.find("\n## ", start + len(HEADING))
    return page[:start] + text + ("\n" + page[end + 1:] if end >= 0 else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--journal", type=Path, default=JOURNAL)
    ap.add_argument("--page", type=Path, default=PAGE)
    ap.add_argument("--transfer-journal", type=Path, default=TRANSFER_JOURNAL)
    ap.add_argument("--hstu-journal", type=Path, default=HSTU_JOURNAL)
    ap.add_argument("--current-journal", type=Path, nargs="*", default=CURRENT_JOURNALS)
    args = ap.parse_args(argv)
    if not args.journal.is_file():
        print(f"error: no journal at {args.journal}: run benchmarks/full_fidelity_search.sh first", file=sys.stderr)
        return 2
    runs = read_runs(args.journal)
    png = args.page.parent / "results" / "ff_best_vs_compute.png"
    plot_runs(runs, png)
    current = [replace(r, method=f"{r.method} ({LABELS.get(path.stem, 'current')})")
               for path in args.current_journal if path.is_file() for r in read_runs(path)]
    text = section(runs, str(png.relative_to(args.page.parent)), current)
    if args.transfer_journal.is_file():
        done = [r for r in runs if r.finished and r.best_valid is not None]
        target = TARGET_FRAC * max(r.best_valid for r in done) if done else None
        text += "\n" + transfer_section(read_runs(args.transfer_journal, SOURCE),
                                        read_runs(args.transfer_journal, ARM), target,
                                        [r for r in runs if r.method.startswith("agent") and r.finished])
    if args.hstu_journal.is_file():
        text += "\n" + hstu_section(read_runs(args.hstu_journal))
    page = args.page.read_text() if args.page.is_file() else "# Results\n"
    args.page.write_text(replace_section(page, text))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
