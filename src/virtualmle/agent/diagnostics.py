"""Deterministic diagnostics of a finished trial, computed in code for the LLM to read.

The LLM never decides what happened; it is told. Everything here is a pure function of stored
trial data (parameters, the per-epoch validation curve, state, cost), so a resumed study
recomputes exactly the same diagnostics from storage.

- delta against the incumbent, compared with run-to-run noise (estimated from repeated
  configurations when there are any, else a relative prior);
- overfitting: validation peaked early, then fell;
- underfitting: validation still rising at the last epoch and training stopped at max_epochs;
- failure class: diverged / oom / timeout / error / pruned;
- cost: seconds and parameter count, and the ratio to the incumbent's.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from virtualmle.records import config_key

# Run-to-run noise of NDCG@10 / HR@10 on the small Amazon datasets is a few percent of the value
# (seed-only differences); used until the study has repeated configurations to measure it.
DEFAULT_RELATIVE_NOISE = 0.03
# A fall of the validation metric after its peak smaller than this (relative) is not overfitting.
OVERFIT_DROP = 0.02
# A last-epoch gain larger than this (relative to the previous epoch) means "still rising".
RISING_GAIN = 0.005

Significance = Literal["first", "better", "worse", "within_noise", "failed"]


@dataclass
class Observation:
    """One finished trial as the agent sees it (never any test metric).

    Attributes:
        number: the trial number in the study.
        params: the searched parameters of the configuration.
        value: the validation metric, or None if the trial failed.
        state: "complete", "failed" or "pruned".
        curve: validation metric per epoch.
        seconds: training seconds; num_params: parameter count (None when unknown).
        stopped: why training stopped ("early_stop", "max_epochs", "pruned") if known.
        last_epoch: the last epoch trained (None when unknown).
        error: failure class ("diverged", "oom", "timeout", "error") for failed trials.
        base: trial number of the incumbent the change was made from (None for the first).
        changed: names of parameters that differ from the base configuration.
        attrs: the agent's stored user attrs for the trial (hypothesis, reflection, ...).
        by_epoch: validation metric per validated epoch number (the curve with its epochs).
    """

    number: int
    params: dict[str, Any]
    value: float | None
    state: str = "complete"
    curve: list[float] = field(default_factory=list)
    seconds: float | None = None
    num_params: int | None = None
    stopped: str | None = None
    error: str | None = None
    base: int | None = None
    changed: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    last_epoch: int | None = None
    by_epoch: dict[int, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.value is not None and math.isfinite(self.value)


@dataclass
class Diagnostics:
    """What happened in one trial, relative to the incumbent it was compared with."""

    trial: int
    value: float | None
    incumbent: int | None
    incumbent_value: float | None
    delta: float | None
    relative_delta: float | None
    noise: float
    significance: Significance
    improved: bool  # code's keep / discard: strictly better validation metric than the incumbent
    overfitting: bool
    underfitting: bool
    peak_epoch: int | None
    epochs: int
    failure: str | None
    seconds: float | None
    num_params: int | None
    cost_ratio: float | None  # seconds / incumbent seconds
    changed: dict[str, list[Any]] = field(default_factory=dict)  # name -> [old, new]

    @property
    def code_verdict(self) -> str:
        """keep (new incumbent), discard, or inconclusive (the change is within noise)."""
        if self.significance == "first":
            return "keep"
        if self.significance in ("within_noise",):
            return "keep" if self.improved else "inconclusive"
        return "keep" if self.improved else "discard"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, stored in the trial's user attrs."""
        d = asdict(self)
        d["code_verdict"] = self.code_verdict
        return d

    def summary(self) -> str:
        """One short line per fact, for prompts and the progress display."""
        parts: list[str] = []
        if self.failure:
            parts.append(f"trial failed: {self.failure}")
        elif self.significance == "first":
            parts.append(f"first trial, metric {_f(self.value)}")
        else:
            parts.append(
                f"metric {_f(self.value)} vs incumbent {_f(self.incumbent_value)} "
                f"(delta {_signed(self.delta)}, noise +/-{_f(self.noise)}): {self.significance}"
            )
        if self.overfitting:
            parts.append(f"overfitting: validation peaked at epoch {self.peak_epoch} of {self.epochs} then fell")
        if self.underfitting:
            parts.append(f"underfitting: validation still rising at the last epoch ({self.epochs})")
        if self.cost_ratio is not None and self.seconds is not None:
            parts.append(f"cost {self.seconds:.1f}s ({self.cost_ratio:.2f}x incumbent)")
        if self.num_params:
            parts.append(f"{self.num_params:,} parameters")
        return "; ".join(parts)


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.6f}"


def _signed(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.6f}"


def estimate_noise(history: list[Observation], reference: float | None, eval_users: int | None = None) -> float:
    """Run-to-run noise (one standard deviation) of the validation metric.

    Repeated configurations (same searched parameters; e.g. different seeds or a rerun) give a
    pooled standard deviation; without any, a prior: `DEFAULT_RELATIVE_NOISE` times the reference
    value, or, when the number of evaluated users is known and small, the sampling error of a
    per-user metric in [0, 1] with mean m (variance at most m, taken as m / 2), whichever is
    larger. On a 1000-user slice that is about 0.001 for NDCG@10 near 0.002: deltas of that size
    are not evidence. The prior is also a floor, because two repeats are a poor estimate.
    """
    prior = DEFAULT_RELATIVE_NOISE * abs(reference) if reference else 1e-4
    if reference and eval_users and eval_users > 0:
        prior = max(prior, math.sqrt(0.5 * abs(reference) / eval_users))
    groups: dict[str, list[float]] = {}
    for o in history:
        if o.ok:
            groups.setdefault(config_key(o.params), []).append(float(o.value))  # type: ignore[arg-type]
    ss, dof = 0.0, 0
    for vals in groups.values():
        if len(vals) > 1:
            m = statistics.fmean(vals)
            ss += sum((v - m) ** 2 for v in vals)
            dof += len(vals) - 1
    if dof:
        return max(math.sqrt(ss / dof), prior * 0.5)
    return max(prior, 1e-6)


def curve_shape(curve: list[float], stopped: str | None) -> tuple[bool, bool, int | None]:
    """(overfitting, underfitting, peak_epoch 1-based) of a validation curve."""
    vals = [v for v in curve if v is not None and math.isfinite(v)]
    if not vals:
        return False, False, None
    peak_i = max(range(len(vals)), key=lambda i: vals[i])
    peak = vals[peak_i]
    last = vals[-1]
    n = len(vals)
    overfit = (
        n >= 3
        and peak_i < n - 1
        and peak > 0
        and (peak - last) / peak > OVERFIT_DROP
        and peak_i + 1 <= max(1, int(0.75 * n))
    )
    rising = n == 1 or (vals[-2] > 0 and (vals[-1] - vals[-2]) / abs(vals[-2]) > RISING_GAIN) or (
        vals[-2] <= 0 < vals[-1]
    )
    # Early stopping or pruning means the run was not cut short by the epoch budget.
    underfit = rising and peak_i == n - 1 and stopped not in ("early_stop", "pruned")
    return overfit, underfit, peak_i + 1


def diagnose(obs: Observation, history: list[Observation], incumbent: Observation | None,
             *, eval_users: int | None = None) -> Diagnostics:
    """Diagnostics of `obs` against `incumbent` (the best trial before it) and the study so far.

    `eval_users`: users in the validation set, for the noise prior (see `estimate_noise`).
    """
    ref = incumbent.value if incumbent is not None and incumbent.ok else obs.value
    noise = estimate_noise(history + [obs], ref, eval_users)
    overfit, underfit, peak = curve_shape(obs.curve, obs.stopped)
    changed: dict[str, list[Any]] = {}
    if incumbent is not None:
        for k in sorted(set(obs.params) | set(incumbent.params)):
            if obs.params.get(k) != incumbent.params.get(k):
                changed[k] = [incumbent.params.get(k), obs.params.get(k)]
    delta = rel = None
    improved = False
    if not obs.ok:
        sig: Significance = "failed"
    elif incumbent is None or not incumbent.ok:
        sig = "first"
        improved = True
    else:
        delta = float(obs.value) - float(incumbent.value)  # type: ignore[arg-type]
        rel = delta / abs(incumbent.value) if incumbent.value else None
        improved = delta > 0
        sig = "within_noise" if abs(delta) <= noise else ("better" if delta > 0 else "worse")
    cost_ratio = None
    if obs.seconds and incumbent is not None and incumbent.seconds:
        cost_ratio = obs.seconds / incumbent.seconds
    return Diagnostics(
        trial=obs.number,
        value=obs.value,
        incumbent=incumbent.number if incumbent is not None else None,
        incumbent_value=incumbent.value if incumbent is not None else None,
        delta=delta,
        relative_delta=rel,
        noise=noise,
        significance=sig,
        improved=improved,
        overfitting=overfit,
        underfitting=underfit,
        peak_epoch=peak,
        epochs=len(obs.curve),
        failure=obs.error if not obs.ok else None,
        seconds=obs.seconds,
        num_params=obs.num_params,
        cost_ratio=cost_ratio,
        changed=changed,
    )


def best_of(history: list[Observation]) -> Observation | None:
    """The incumbent: best validation metric; ties go to the earlier (simpler, default-first) trial."""
    best: Observation | None = None
    for o in history:
        if o.ok and (best is None or float(o.value) > float(best.value)):  # type: ignore[arg-type]
            best = o
    return best
