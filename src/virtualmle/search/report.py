"""`virtualmle report`: an HTML page with PNG plots for one or more studies of a storage.

Per study: best validation metric against trial number and against compute seconds, the effect
of each parameter (validation metric against its value), and the trial table with outcomes,
errors and the method's user attrs (the agent's hypothesis and verdict). With several studies,
overlay plots compare them. Plots are drawn with matplotlib's Agg backend (no display needed).
Every file is written atomically (temp file, then rename).
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from virtualmle.errors import StorageError
from virtualmle.files import write_atomic
from virtualmle.records import A_TEXT_REJECTIONS, NOTE_ATTRS
from virtualmle.search.stored import choice_value

_HIDDEN_ATTRS = {"owner", "log", "valid", "test", "epochs", "seconds", "outcome", "num_params",
                 "best_epoch", "stopped", "error", "traceback", "extra_params", "free", "method"}
_OUTCOME_COLORS = {"complete": "#1f77b4", "pruned": "#9467bd", "failed": "#d62728",
                   "timeout": "#ff7f0e", "oom": "#8c564b", "diverged": "#e377c2",
                   "invalid": "#7f7f7f", "interrupted": "#bcbd22"}


@dataclass
class StudyData:
    """What the report needs from one study."""

    name: str
    attrs: dict[str, Any]
    trials: list[FrozenTrial]  # finished trials that used budget, in completion order

    @property
    def metric(self) -> str:
        return self.attrs.get("metric", "value")


def load_studies(storage: optuna.storages.BaseStorage, names: list[str] | None) -> list[StudyData]:
    """Read the named studies (all when ``names`` is empty) from ``storage``.

    Raises:
        StorageError: a named study does not exist, or the storage holds none.
    """
    existing = [s.study_name for s in storage.get_all_studies()]
    if names:
        for n in names:
            if n not in existing:
                known = ", ".join(existing[:10]) or "none"
                raise StorageError(f"study {n!r} not found in the storage (studies: {known})")
    else:
        names = existing
        if not names:
            raise StorageError("the storage holds no studies")
    out = []
    for n in names:
        study = optuna.load_study(study_name=n, storage=storage)
        trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()
                  and not t.user_attrs.get("free") and t.user_attrs.get("outcome") != "interrupted"]
        trials.sort(key=lambda t: (t.datetime_complete or t.datetime_start, t.number))
        out.append(StudyData(n, dict(study.user_attrs), trials))
    return out


def _outcome(t: FrozenTrial) -> str:
    return t.user_attrs.get("outcome") or t.state.name.lower()


def _best_curve(trials: list[FrozenTrial], metric: str) -> tuple[list[int], list[float], list[float]]:
    """(trial index 1.., cumulative compute seconds, best value so far) over completion order."""
    idx, secs, best = [], [], []
    total, cur = 0.0, -math.inf
    for i, t in enumerate(trials, 1):
        total += float(t.user_attrs.get("seconds", 0.0))
        value = choice_value(t, metric)
        if value is not None:
            cur = max(cur, value)
        idx.append(i)
        secs.append(total)
        best.append(cur if cur > -math.inf else math.nan)
    return idx, secs, best


def _figure(w: float = 7.0, h: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    write_atomic(path, buf.getvalue())


def plot_history(study: StudyData, path: Path) -> None:
    """Each trial's validation metric and the best so far, against trial index."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for outcome in sorted({_outcome(t) for t in study.trials}):
        pts = [(i, t.value) for i, t in enumerate(study.trials, 1)
               if _outcome(t) == outcome and t.value is not None]
        if pts:
            ax.scatter(*zip(*pts), s=18, alpha=0.7, color=_OUTCOME_COLORS.get(outcome), label=outcome)
        fails = [i for i, t in enumerate(study.trials, 1) if _outcome(t) == outcome and t.value is None]
        if fails:
            ax.scatter(fails, [0.0] * len(fails), marker="x", s=22, color=_OUTCOME_COLORS.get(outcome, "k"),
                       label=f"{outcome} (no value)")
    idx, _, best = _best_curve(study.trials, study.metric)
    ax.step(idx, best, where="post", color="black", lw=1.5, label="best so far")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial (completion order)")
    ax.set_ylabel(f"validation {study.metric}")
    ax.set_title(f"{study.name}: best validation {study.metric} vs trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def plot_compute(study: StudyData, path: Path) -> None:
    """Best validation metric so far against cumulative compute seconds."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    _, secs, best = _best_curve(study.trials, study.metric)
    ax.step(secs, best, where="post", color="black", lw=1.5)
    ax.scatter(secs, best, s=10, color="black")
    ax.set_xlabel("compute seconds (sum of trial wall times)")
    ax.set_ylabel(f"best validation {study.metric}")
    ax.set_title(f"{study.name}: best validation {study.metric} vs compute")
    ax.grid(alpha=0.3)
    _save(fig, path)


def _param_names(study: StudyData) -> list[str]:
    names: dict[str, None] = {}
    for t in study.trials:
        for n in list(t.params) + list(t.user_attrs.get("extra_params", {})):
            names.setdefault(n, None)
    # A parameter that never changed says nothing about its effect.
    varied = []
    for n in names:
        values = {json.dumps(_param(t, n), sort_keys=True) for t in study.trials if _param(t, n) is not None}
        if len(values) > 1:
            varied.append(n)
    return varied


def _param(t: FrozenTrial, name: str) -> Any:
    if name in t.params:
        return t.params[name]
    return t.user_attrs.get("extra_params", {}).get(name)


def plot_params(study: StudyData, path: Path) -> bool:
    """Validation metric against each varied parameter (one panel each). False if none varied."""
    names = _param_names(study)
    done = [t for t in study.trials if t.value is not None]
    if not names or not done:
        return False
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = _figure(4.0 * cols, 2.8 * rows)
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        pts = [(_param(t, name), t.value) for t in done if _param(t, name) is not None]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v, _ in pts)
        if numeric:
            xs, ys = zip(*pts)
            ax.scatter(xs, ys, s=14, alpha=0.7)
            if min(xs) > 0 and max(xs) / min(xs) > 20:
                ax.set_xscale("log")
        else:
            cats = sorted({str(v) for v, _ in pts})
            for j, c in enumerate(cats):
                ys = [y for v, y in pts if str(v) == c]
                ax.scatter([j] * len(ys), ys, s=14, alpha=0.7)
                ax.plot([j - 0.25, j + 0.25], [max(ys)] * 2, color="black", lw=1)
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels(cats, fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{study.name}: validation {study.metric} by parameter (bar: best per value)", fontsize=10)
    _save(fig, path)
    return True


def plot_compare(studies: list[StudyData], path: Path, by: str) -> None:
    """Best-so-far curves of several studies on one plot (``by``: ``trials`` or ``seconds``)."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for s in studies:
        idx, secs, best = _best_curve(s.trials, s.metric)
        ax.step(idx if by == "trials" else secs, best, where="post", lw=1.5, label=s.name)
    ax.set_xlabel("trial (completion order)" if by == "trials" else "compute seconds")
    ax.set_ylabel("best validation metric")
    ax.set_title(f"best validation metric vs {by}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dict):  # e.g. a reflection: "verdict: keep; attribution: ..."
        return "; ".join(f"{k}: {_fmt(x)}" for k, x in v.items() if x not in (None, "", [], {}))
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "study"


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1150px}
h1{font-size:22px} h2{font-size:18px;margin-top:36px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:12px;margin:8px 0} td,th{border:1px solid #ddd;padding:3px 6px;vertical-align:top}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.best{background:#eaf6ea} .muted{color:#777} img{max-width:100%;border:1px solid #eee;margin:6px 0}
.o-complete{color:#1f77b4}.o-failed,.o-oom,.o-diverged,.o-timeout{color:#d62728;font-weight:600}.o-pruned{color:#9467bd}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:8px}
tr.notes td{border-top:none;color:#444;padding-left:24px} details summary{cursor:pointer;color:#555}
"""


def _study_section(s: StudyData, out: Path) -> str:
    slug = _slug(s.name)
    plot_history(s, out / f"{slug}-history.png")
    plot_compute(s, out / f"{slug}-compute.png")
    has_params = plot_params(s, out / f"{slug}-params.png")
    scored = [(v, t) for t in s.trials if (v := choice_value(t, s.metric)) is not None]
    best_value, best = max(scored, key=lambda p: (p[0], -p[1].number)) if scored else (None, None)
    counts: dict[str, int] = {}
    for t in s.trials:
        counts[_outcome(t)] = counts.get(_outcome(t), 0) + 1
    compute = sum(float(t.user_attrs.get("seconds", 0.0)) for t in s.trials)
    e = html.escape
    a = s.attrs
    parts = [f'<h2 id="{e(slug)}">{e(s.name)}</h2>']
    meta = ", ".join(f"{k} <b>{e(_fmt(a[k]))}</b>" for k in ("dataset", "model", "method", "metric", "seed",
                                                             "budget", "max_epochs", "slice_users") if k in a)
    parts.append(f"<p>{meta}</p>")
    parts.append(f"<p>{len(s.trials)} trials ({e(', '.join(f'{k} {v}' for k, v in sorted(counts.items())))}), "
                 f"compute {compute:.1f} s</p>")
    checked = [int(t.user_attrs[A_TEXT_REJECTIONS]) for t in s.trials if A_TEXT_REJECTIONS in t.user_attrs]
    if checked:  # the agent's fact check: LLM texts replaced by the code's facts
        parts.append(f"<p>LLM texts rejected by the fact check: <b>{sum(checked)}</b> "
                     f"(in {sum(1 for n in checked if n)} of {len(checked)} trials)</p>")
    if best is not None:
        valid, test = best.user_attrs.get("valid", {}), best.user_attrs.get("test", {})
        rows = "".join(f"<tr><td>{e(k)}</td><td class=num>{valid[k]:.6f}</td>"
                       f"<td class=num>{test.get(k, math.nan):.6f}</td></tr>" for k in valid)
        cfg = " ".join(f"{e(k)}={e(_fmt(v))}" for k, v in {**best.params, **best.user_attrs.get('extra_params', {})}.items())
        parts.append(f"<p>Best on validation: trial <b>#{best.number}</b>, {e(s.metric)} <b>{best_value:.6f}</b>"
                     f"<br><span class=muted>{cfg}</span></p>")
        parts.append("<table><tr><th>metric</th><th>validation</th><th>test (reported once, never used to choose)</th>"
                     f"</tr>{rows}</table>")
    else:
        parts.append("<p>No trial completed.</p>")
    parts.append(f'<div class=grid2><img src="{slug}-history.png" alt="best vs trials">'
                 f'<img src="{slug}-compute.png" alt="best vs compute"></div>')
    if has_params:
        parts.append(f'<img src="{slug}-params.png" alt="parameter effects">')
    names: list[str] = []
    for t in s.trials:
        for n in list(t.params) + list(t.user_attrs.get("extra_params", {})):
            if n not in names:
                names.append(n)
    head = "".join(f"<th>{e(n)}</th>" for n in names)
    parts.append(f"<table><tr><th>#</th><th>outcome</th><th>{e(s.metric)}</th><th>seconds</th><th>model params</th>"
                 f"{head}</tr>")
    for t in sorted(s.trials, key=lambda t: t.number):
        o = _outcome(t)
        notes = []
        for k in NOTE_ATTRS:
            if k in t.user_attrs:
                notes.append(f"<b>{e(k)}</b>: {e(_fmt(t.user_attrs[k]))}")
        if t.user_attrs.get("error"):
            notes.append(f"<span class=o-failed>{e(str(t.user_attrs['error'])[:300])}</span>")
        # Everything else a method stored (diagnostics, planning context, ...) stays one click away.
        extra = [f"<b>{e(k)}</b>: {e(_fmt(v))[:200]}" for k, v in t.user_attrs.items()
                 if k not in _HIDDEN_ATTRS and k not in NOTE_ATTRS]
        if extra:
            notes.append(f"<details><summary>{len(extra)} more</summary>{'<br>'.join(extra)}</details>")
        cls = ' class="best"' if best is not None and t.number == best.number else ""
        cells = "".join(f"<td>{e(_fmt(_param(t, n)))}</td>" if _param(t, n) is not None else "<td></td>"
                        for n in names)
        value = f"{t.value:.6f}" if t.value is not None else ""
        nparams = t.user_attrs.get("num_params")
        parts.append(f"<tr{cls}><td>{t.number}</td><td class=o-{e(o)}>{e(o)}</td><td class=num>{value}</td>"
                     f"<td class=num>{float(t.user_attrs.get('seconds', 0.0)):.1f}</td>"
                     f"<td class=num>{'' if nparams is None else f'{nparams:,}'}</td>{cells}</tr>")
        if notes:  # the method's notes (hypothesis, verdict, ...) on a full-width row under the trial
            parts.append(f"<tr class=notes><td></td><td colspan={4 + len(names)}>{'<br>'.join(notes)}</td></tr>")
    parts.append("</table>")
    return "\n".join(parts)


def write_report(storage: optuna.storages.BaseStorage, out: Path, studies: list[str] | None = None,
                 *, storage_url: str = "") -> Path:
    """Write ``out/index.html`` and its PNG plots; return the page's path."""
    data = load_studies(storage, studies)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    if len(data) > 1:
        plot_compare(data, out / "compare-trials.png", "trials")
        plot_compare(data, out / "compare-seconds.png", "seconds")
        sections.append('<h2>Comparison</h2><div class=grid2><img src="compare-trials.png" alt="compare trials">'
                        '<img src="compare-seconds.png" alt="compare seconds"></div>')
    sections += [_study_section(s, out) for s in data]
    toc = " &middot; ".join(f'<a href="#{html.escape(_slug(s.name))}">{html.escape(s.name)}</a>' for s in data)
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>VirtualMLE report</title>"
            f"<style>{_CSS}</style></head><body><h1>VirtualMLE search report</h1>"
            f"<p class=muted>storage {html.escape(storage_url)} &middot; {len(data)} "
            f"stud{'y' if len(data) == 1 else 'ies'}: {toc}</p>{''.join(sections)}</body></html>")
    index = out / "index.html"
    write_atomic(index, page)
    return index
