"""PNG plots of a bench (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from virtualmle.files import write_atomic

_COLORS = {"agent": "#d62728", "opro": "#ff7f0e", "tpe": "#1f77b4", "random": "#2ca02c", "grid": "#9467bd",
           "default": "#7f7f7f", "agent-code": "#8c564b", "agent-norefl": "#e377c2",
           "agent-nomem": "#17becf"}


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_atomic(path, buf.getvalue())
    return path


def _step_at(xs: list[float], ys: list[float | None], grid: list[float]) -> list[float | None]:
    """The step function (x_i, y_i) evaluated on ``grid`` (None before the first value)."""
    out, j, cur = [], 0, None
    for g in grid:
        while j < len(xs) and xs[j] <= g:
            if ys[j] is not None:
                cur = ys[j]
            j += 1
        out.append(cur)
    return out


def plot_curves(result: Any, out: Path, prefix: str = "") -> list[Path]:
    """Best validation metric vs trials and vs compute seconds (mean ± standard error over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from virtualmle.bench.stats import mean as _mean, se as _se

    metric = result.options.get("metric", "ndcg@10")
    paths = []
    curves = result.curves()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m, c in curves.items():
        xs = [i + 1 for i, v in enumerate(c["mean"]) if v is not None]
        ys = [v for v in c["mean"] if v is not None]
        se = [c["se"][i] or 0.0 for i, v in enumerate(c["mean"]) if v is not None]
        if not xs:
            continue
        color = _COLORS.get(m)
        ax.plot(xs, ys, label=m, color=color, drawstyle="steps-post")
        ax.fill_between(xs, [y - s for y, s in zip(ys, se)], [y + s for y, s in zip(ys, se)],
                        color=color, alpha=0.15, step="post")
    if result.target is not None:
        ax.axhline(result.target, color="black", lw=0.8, ls="--", label="target")
    ax.set_xlabel("trials")
    ax.set_ylabel(f"best validation {metric} so far")
    ax.set_title(f"{result.options['data']} / {result.options['model']}: mean ± se over seeds")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    paths.append(_save(fig, Path(out) / f"{prefix}best_vs_trials.png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    horizon = max((sum(r.seconds) for r in result.runs), default=0.0)
    if horizon > 0:
        grid = [horizon * i / 200 for i in range(1, 201)]
        for m in result.methods():
            per_run = []
            for r in (r for r in result.runs if r.method == m):
                xs, cum = [], 0.0
                for s in r.seconds:
                    cum += s
                    xs.append(cum)
                per_run.append(_step_at(xs, r.best_curve(), grid))
            mean, se, gx = [], [], []
            for k, g in enumerate(grid):
                col = [p[k] for p in per_run if p[k] is not None]
                if len(col) == len(per_run) and col:  # only where every seed has a value
                    gx.append(g)
                    mean.append(_mean(col))
                    se.append(_se(col) or 0.0)
            if not gx:
                continue
            color = _COLORS.get(m)
            ax.plot(gx, mean, label=m, color=color)
            ax.fill_between(gx, [a - b for a, b in zip(mean, se)], [a + b for a, b in zip(mean, se)],
                            color=color, alpha=0.15)
    if result.target is not None:
        ax.axhline(result.target, color="black", lw=0.8, ls="--", label="target")
    ax.set_xlabel("compute seconds (sum of trial seconds)")
    ax.set_ylabel(f"best validation {metric} so far")
    ax.set_title("best so far vs compute (where every seed has a value)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    paths.append(_save(fig, Path(out) / f"{prefix}best_vs_seconds.png"))
    plt.close(fig)
    return paths
