"""One trial, one vocabulary: the `Outcome` enum, the `TrialRecord` every method sees, the user
attribute keys methods store on a trial, and the one key that says two configurations are equal.

Everything above the storage layer (the search loop, the classic methods, the agent, OPRO, the
memory package, the bench) reads a trial through these names, so a trial has one type and an
outcome has one spelling. This module imports nothing of the project.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Outcome(str, Enum):
    """How a trial ended. Stored as the Optuna user attribute ``outcome``.

    Optuna state: COMPLETE for `COMPLETE`, PRUNED for `PRUNED`, FAIL for everything else.
    """

    COMPLETE = "complete"
    PRUNED = "pruned"  # stopped early by the study's pruner; has validation metrics so far
    FAILED = "failed"  # an exception in the trial (type and short traceback are kept)
    TIMEOUT = "timeout"  # ran past --timeout-per-trial and was killed
    OOM = "oom"  # out of memory (CUDA or host), or killed by the kernel's OOM killer
    DIVERGED = "diverged"  # NaN / inf loss
    INVALID = "invalid"  # the proposed configuration broke a constraint or failed validation
    INTERRUPTED = "interrupted"  # the search process died or was cancelled; the trial is re-run

    @property
    def counts_against_budget(self) -> bool:
        """Interrupted trials are re-run, so they do not use up the budget."""
        return self is not Outcome.INTERRUPTED

    @property
    def failure_class(self) -> str:
        """The short class a diagnosis names for a trial that did not complete: ``diverged``,
        ``oom``, ``timeout``, ``invalid``, ``pruned``, or ``error`` for any other failure."""
        if self in (Outcome.DIVERGED, Outcome.OOM, Outcome.TIMEOUT, Outcome.INVALID, Outcome.PRUNED):
            return self.value
        return "error"


@dataclass(frozen=True)
class TrialRecord:
    """An immutable view of one finished trial, as methods see it (no test metrics).

    Attributes:
        number: Optuna trial number.
        params: the configuration that was trained (space parameters and any extras; fidelity
            controls such as ``max_epochs`` are not included).
        outcome: how it ended.
        value: the validation metric the study optimises (None unless complete or pruned).
        valid: validation metrics of the selected epoch (``hr@10``, ``ndcg@10``, ...).
        epochs: per-epoch logs (``epoch``, ``loss``, ``valid`` ..., as the trainer reports them).
        seconds: wall-clock seconds of the trial including process start.
        num_params: model parameter count, when known.
        error: ``"ExceptionType: message"`` for failed / diverged / oom / timeout trials.
        stopped: why training ended (``early_stop``, ``max_epochs``, ``pruned``), when known.
        user_attrs: what the method stored with the proposal and from `observe`.
    """

    number: int
    params: dict[str, Any]
    outcome: Outcome
    value: float | None = None
    valid: dict[str, float] = field(default_factory=dict)
    epochs: tuple[dict[str, Any], ...] = ()
    seconds: float = 0.0
    num_params: int | None = None
    error: str | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)
    stopped: str | None = None

    @property
    def ok(self) -> bool:
        """Completed with a finite validation value."""
        return self.outcome is Outcome.COMPLETE and self.value is not None and math.isfinite(self.value)

    def curve(self, metric: str) -> list[float]:
        """The validation ``metric`` per epoch (finite values only)."""
        out: list[float] = []
        for e in self.epochs:
            v = (e.get("valid") or {}).get(metric) if isinstance(e, dict) else None
            if isinstance(v, (int, float)) and math.isfinite(v):
                out.append(float(v))
        return out

    def by_epoch(self, metric: str) -> dict[int, float]:
        """The validation ``metric`` per validated epoch number (finite values only)."""
        out: dict[int, float] = {}
        for e in self.epochs:
            epoch = e.get("epoch") if isinstance(e, dict) else None
            v = (e.get("valid") or {}).get(metric) if isinstance(e, dict) else None
            if isinstance(epoch, int) and isinstance(v, (int, float)) and math.isfinite(v):
                out[epoch] = float(v)
        return out


# ---- user attributes a method stores on a trial ------------------------------------------------
# The agent writes them; the memory package, the report and the agent itself (on resume) read
# them back. The loop's own attributes (outcome, valid, test, ...) are `search.loop.RESERVED_ATTRS`.
A_HYPOTHESIS = "hypothesis"  # {"text", "mechanism", "risk", "changes", "source"} (or a plain string)
A_REFLECTION = "reflection"  # memory.Reflection.model_dump() plus the agent's checks
A_DIAGNOSTICS = "diagnostics"  # dict computed in code (overfit, underfit, noise, failure, ...)
A_CHANGED = "changed"  # list of parameter names changed against the parent
A_PARENT = "parent"  # trial number of the configuration this one changed
A_VERDICT = "verdict"  # keep / discard / inconclusive, decided by code on validation
A_AGENT = "agent"  # per-step record: mode, source, pick, fallback, refusals, seconds
A_CONTEXT = "planning_context"  # the planning context the step was built from
A_TRANSFER = "transfer_rules"  # transferred rule lines shown to the LLM
A_OPRO = "opro"  # OPRO's per-step record: source, fallback, raw reply, clipped names
A_SCREEN = "screen"  # {"round", "epochs"}: a trial the agent screened at a cheap fidelity
A_PROMOTED_FROM = "promoted_from"  # the screen a promoted trial continued from
A_PROMOTION = "promotion"  # why it was promoted (text)
A_SCREEN_SETTLED = "screen_settled"  # a round closed without promotion, and why (text)

# LLM texts (hypothesis, reflection, insight) of this trial that disagreed with the code's facts
# (the report shows the study's total)
A_TEXT_REJECTIONS = "text_rejections"
# Shown in the report's notes column, in this order, when a method stored them.
NOTE_ATTRS = (A_HYPOTHESIS, A_VERDICT, A_REFLECTION, "change", "rule", "rerun_of", "stopped_by", "stop_reason",
              A_PROMOTION, A_SCREEN_SETTLED)


# ---- when two configurations are the same ------------------------------------------------------

def same_value(a: Any, b: Any) -> bool:
    """Two parameter values are equal: bools only equal bools (``True != 1`` here), numbers
    within float noise, anything else by ``==``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def value_key(value: Any) -> tuple[str, Any]:
    """A hashable identity of one parameter value: bools apart from numbers (``True == 1`` in
    Python), numbers as floats rounded to 10 significant digits, anything else as is."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("num", float(f"{float(value):.10g}"))
    return ("str", value)


def config_key(params: dict[str, Any], names: Iterable[str] | None = None) -> str:
    """A canonical string for a configuration (over ``names``, default all of its keys), for
    duplicate detection: floats rounded to 6 significant digits, so values read back from
    storage or a CSV match the ones proposed."""
    keys = sorted(params if names is None else names)
    items = []
    for k in keys:
        v = params.get(k)
        if isinstance(v, float):
            v = float(f"{v:.6g}")
        items.append(f"{k}={v!r}")
    return ";".join(items)
