"""Files of a bench: ``runs.csv``, ``summary.csv``, ``curves.csv``, ``bench.md``, ``bench.json``
and the PNG plots (matplotlib Agg). Every file is written atomically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from virtualmle.bench.plots import plot_curves
from virtualmle.files import write_atomic


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def fmt(x: Any, digits: int = 4) -> str:
    """A number for a Markdown cell ('-' for missing)."""
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def markdown_table(result: Any) -> str:
    """The per-method Markdown table of a `BenchResult`."""
    metric = result.options.get("metric", "ndcg@10")
    table_mode = bool(result.options.get("table"))
    head = ["method", "runs", f"best valid {metric} (mean ± se)", f"test {metric} of chosen (mean ± se)",
            "reached target", "trials to target (mean / median)", "compute s to target (mean)",
            "compute s total (mean)"]
    if table_mode:
        head.append("snapped trials")
    head += ["LLM calls / run", "LLM tokens / run", "LLM cost $ / run", "wall s / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result.summary():
        cells = [
            r["method"], str(r["runs"]),
            f"{fmt(r['best_valid_mean'])} ± {fmt(r['best_valid_se'])}",
            f"{fmt(r['test_of_best_mean'])} ± {fmt(r['test_of_best_se'])}",
            f"{r['reached']}/{r['runs']}",
            f"{fmt(r['trials_to_target_mean'], 1)} / {fmt(r['trials_to_target_median'], 1)}",
            fmt(r["seconds_to_target_mean"], 0),
            fmt(r["compute_seconds_mean"], 0),
        ]
        if table_mode:
            cells.append("-" if r["snap_rate"] is None else f"{100 * r['snap_rate']:.0f}%")
        cells += [fmt(r["llm_calls"], 1), fmt(r["llm_tokens"], 0), fmt(r["llm_cost_usd"], 4),
                  fmt(r["wall_seconds_mean"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def describe(result: Any) -> str:
    """One paragraph: data, fidelity, budget, seeds, target."""
    o = result.options
    src = f"replayed from trial table `{o['table']}`" if o.get("table") else "trained for real"
    target = (f"target = {o['target_frac']:.2f} x best validation {o['metric']} any run found "
              f"({fmt(result.best_any)}) = {fmt(result.target)}") if result.target is not None else "no run completed"
    extra = f"; best point of the table {fmt(result.table_best)}" if result.table_best is not None else ""
    return (f"{o['data']} / {o['model']}, {src}; fidelity slice_users={o.get('slice_users')} "
            f"max_epochs={o.get('max_epochs')}; budget {o['trials']} trials per run, seeds "
            f"{o['seed0']}..{o['seed0'] + o['seeds'] - 1}, workers {o['workers']}; {target}{extra}.")


def write_report(result: Any, out: Path) -> dict[str, str]:
    """Write every bench file into ``out``; returns name -> path."""
    out = Path(out)
    files: dict[str, str] = {}
    run_rows = []
    curve_rows = []
    metric = result.options.get("metric", "ndcg@10")
    for r in result.runs:
        t, s = r.to_reach(result.target) if result.target is not None else (None, None)
        run_rows.append({
            "method": r.method, "seed": r.seed, "study": r.study, "trials": r.trials,
            "best_valid": r.best_value, "test_of_best": r.best_test.get(metric),
            "trials_to_target": t, "seconds_to_target": s, "compute_seconds": round(sum(r.seconds), 3),
            "snapped": r.snaps, "llm_calls": r.llm.get("calls"), "llm_tokens": r.llm.get("tokens"),
            "llm_cost_usd": r.llm.get("cost_usd"), "llm_seconds": r.llm.get("seconds"),
            "wall_seconds": round(r.wall_seconds, 3),
            "outcomes": ";".join(f"{k}={v}" for k, v in sorted(r.outcomes.items())),
            "best_params": json.dumps(r.best_params, sort_keys=True),
        })
        cum = 0.0
        for n, (best, sec) in enumerate(zip(r.best_curve(), r.seconds), start=1):
            cum += sec
            curve_rows.append({"method": r.method, "seed": r.seed, "trial": n, "value": r.values[n - 1],
                               "best_so_far": best, "compute_seconds": round(cum, 3)})
    cols = list(run_rows[0]) if run_rows else ["method"]
    write_atomic(out / "runs.csv", _csv(run_rows, cols))
    files["runs.csv"] = str(out / "runs.csv")
    write_atomic(out / "curves.csv", _csv(curve_rows, ["method", "seed", "trial", "value", "best_so_far", "compute_seconds"]))
    files["curves.csv"] = str(out / "curves.csv")
    summary = result.summary()
    write_atomic(out / "summary.csv", _csv(summary, list(summary[0]) if summary else ["method"]))
    files["summary.csv"] = str(out / "summary.csv")
    pngs = plot_curves(result, out)
    files.update({p.name: str(p) for p in pngs})
    md = [f"# Bench: {result.options['data']} / {result.options['model']}", "", describe(result), "",
          markdown_table(result), ""]
    if any(r.method in ("agent", "opro") and not r.llm.get("logged") for r in result.runs):
        md.append("LLM columns are 0 where a run has no `llm_log.jsonl` (nothing was logged).\n")
    for p in pngs:
        md.append(f"![{p.stem}]({p.name})")
    write_atomic(out / "bench.md", "\n".join(md) + "\n")
    files["bench.md"] = str(out / "bench.md")
    doc = {"options": result.options, "target": result.target, "best_any": result.best_any,
           "table_best": result.table_best, "summary": summary, "curves": result.curves(),
           "runs": run_rows}
    write_atomic(out / "bench.json", json.dumps(doc, indent=1, default=str))
    files["bench.json"] = str(out / "bench.json")
    return files
