"""Short-term memory: what one study has done so far, rebuilt from the Optuna trials at any time.

Everything here is derived from trial records (number, params, value, outcome, user_attrs), so
a study that resumes after a crash rebuilds the same memory from its storage. The agent stores
its hypothesis and reflection in the trial's user attributes under the keys `ATTR_*` below.
"""

from __future__ import annotations

import math
from enum import Enum
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from virtualmle.memory.rules import Rule, Scalar
from virtualmle.memory.text import render_for_prompt, sanitize_text
from virtualmle.records import A_CHANGED, A_DIAGNOSTICS, A_HYPOTHESIS, A_PARENT, A_REFLECTION

# User-attribute keys the agent writes on each trial (JSON values) and this module reads back;
# declared once in `virtualmle.records`.
ATTR_HYPOTHESIS = A_HYPOTHESIS  # Hypothesis.model_dump() (or a plain string)
ATTR_REFLECTION = A_REFLECTION  # Reflection.model_dump()
ATTR_DIAGNOSTICS = A_DIAGNOSTICS  # dict computed in code (overfit, underfit, noise, failure, ...)
ATTR_CHANGED = A_CHANGED  # list of parameter names changed against the parent
ATTR_PARENT = A_PARENT  # trial number of the configuration this one changed

Outcome = str  # "complete" | "pruned" | a failure (see FAILURES) | "running" | "waiting" | "interrupted"


class Hypothesis(BaseModel):
    """One testable change and why: what the agent writes before a trial."""

    model_config = ConfigDict(extra="ignore")
    text: str = ""
    changes: dict[str, Scalar] = Field(default_factory=dict)
    mechanism: str = ""
    risk: str = ""
    source: str = "llm"  # "llm" | "code" | "transfer"

    @field_validator("text", "mechanism", "risk", "source")
    @classmethod
    def _clean(cls, v: str) -> str:
        return sanitize_text(v)


class Reflection(BaseModel):
    """What the agent concluded after a trial (validation metric only)."""

    model_config = ConfigDict(extra="ignore")
    verdict: Literal["keep", "discard", "inconclusive"]
    attribution: str = ""
    rule: str = ""  # the generalised rule, as text
    next_direction: str = ""
    action_rule: Rule | None = None  # the same rule in machine-actionable form, when known

    @field_validator("attribution", "rule", "next_direction")
    @classmethod
    def _clean(cls, v: str) -> str:
        return sanitize_text(v)


@dataclass
class TrialEntry:
    """One trial as memory sees it. `changed`, `parent`, `baseline_value` and `improved` are
    derived (unless the agent stored `changed` / `parent` itself)."""

    number: int
    params: dict[str, Any]
    value: float | None
    outcome: Outcome
    user_attrs: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    hypothesis: Hypothesis | None = None
    reflection: Reflection | None = None
    changed: list[str] = field(default_factory=list)
    parent: int | None = None
    baseline_value: float | None = None  # incumbent's value just before this trial
    improved: bool = False  # became the new incumbent

    @property
    def failed(self) -> bool:
        """The configuration failed (error, divergence, OOM, timeout, invalid)."""
        return self.outcome in FAILURES

    @property
    def ok(self) -> bool:
        return self.outcome == "complete" and self.value is not None and math.isfinite(self.value)


@dataclass
class ParamCoverage:
    """How much one parameter has been explored."""

    values: Counter = field(default_factory=Counter)  # repr(value) -> trials run with it
    touched: int = 0  # trials that changed this parameter
    since_improvement: int = 0  # trials that changed it since one of them last improved
    improvements: int = 0


# Outcomes that are a failure of the configuration (the search loop's `Outcome` values and
# Optuna's FAIL). "interrupted" is not: the trial is re-run.
FAILURES = frozenset({"fail", "timeout", "oom", "diverged", "invalid"})
FINISHED = FAILURES | {"complete", "pruned"}


def _outcome(rec: Any) -> Outcome:
    # The search loop's finer outcome (user attr / TrialRecord.outcome) beats Optuna's state.
    raw = _get(rec, "outcome", None)
    if raw is None:
        raw = (_get(rec, "user_attrs", None) or {}).get("outcome")
    if raw is None:
        raw = _get(rec, "state", "complete")
    if isinstance(raw, Enum):  # TrialRecord's Outcome (str values) or optuna's TrialState (int values)
        raw = raw.value if isinstance(raw.value, str) else raw.name
    s = str(raw).lower()
    return {"failed": "fail", "completed": "complete", "ok": "complete"}.get(s, s)


def _get(rec: Any, key: str, default: Any = None) -> Any:
    if isinstance(rec, Mapping):
        return rec.get(key, default)
    return getattr(rec, key, default)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class StudyMemory:
    """Trials, hypotheses, reflections, incumbent, coverage and open hypotheses of one study.

    Args:
        metric: the validation metric the study optimises (for display).
        direction: "maximize" or "minimize".
        min_delta: an improvement must beat the incumbent by more than this.
        study: the study name (used in trial references of insights).
    """

    def __init__(self, metric: str = "ndcg@10", direction: str = "maximize", *,
                 min_delta: float = 0.0, study: str = "", dataset: str = "", model: str = "") -> None:
        self.metric = metric
        self.direction = direction
        self.min_delta = min_delta
        self.study = study
        self.dataset = dataset
        self.model = model
        self._entries: dict[int, TrialEntry] = {}
        self._pending: list[Hypothesis] = []  # hypotheses not attached to any trial (e.g. transfer)
        self._dirty = True

    # ---- building -------------------------------------------------------------------------
    @classmethod
    def from_records(cls, records: Iterable[Any], **kwargs: Any) -> StudyMemory:
        """Rebuild from trial records: dicts or objects with number, params, value, outcome
        (or Optuna's `state`) and user_attrs, e.g. `study.trials` or the search loop's TrialRecord."""
        mem = cls(**kwargs)
        for rec in records:
            mem.add(rec)
        return mem

    def add(self, rec: Any) -> TrialEntry:
        """Add or update (same number) one trial record."""
        attrs = dict(_get(rec, "user_attrs", None) or {})
        value = _get(rec, "value", None)
        if value is None and _get(rec, "values", None):
            value = _get(rec, "values")[0]
        entry = TrialEntry(
            number=int(_get(rec, "number")),
            params=dict(_get(rec, "params", None) or {}),
            value=None if value is None else float(value),
            outcome=_outcome(rec),
            user_attrs=attrs,
            diagnostics=dict(attrs.get(ATTR_DIAGNOSTICS) or {}),
            hypothesis=_parse_hypothesis(attrs.get(ATTR_HYPOTHESIS)),
            reflection=_parse_reflection(attrs.get(ATTR_REFLECTION)),
        )
        self._entries[entry.number] = entry
        self._dirty = True
        return entry

    def set_hypothesis(self, number: int, hypothesis: Hypothesis) -> None:
        """Attach a hypothesis to a trial already added."""
        self._entries[number].hypothesis = hypothesis

    def set_reflection(self, number: int, reflection: Reflection) -> None:
        """Attach a reflection to a trial already added."""
        self._entries[number].reflection = reflection

    def add_open_hypothesis(self, hypothesis: Hypothesis) -> None:
        """A hypothesis to test later (e.g. a transferred rule), not yet tied to a trial."""
        self._pending.append(hypothesis)

    # ---- derived state ---------------------------------------------------------------------
    def _better(self, a: float, b: float) -> bool:
        return (a - b > self.min_delta) if self.direction == "maximize" else (b - a > self.min_delta)

    def _derive(self) -> None:
        if not self._dirty:
            return
        self._coverage: dict[str, ParamCoverage] = {}
        inc: TrialEntry | None = None
        for e in self.trials_raw():
            attrs = e.user_attrs
            parent = attrs.get(ATTR_PARENT)
            base = self._entries.get(parent) if isinstance(parent, int) else None
            base = base or inc
            e.parent = base.number if base else None
            e.baseline_value = inc.value if inc else None
            stored = attrs.get(ATTR_CHANGED)
            if isinstance(stored, list) and all(isinstance(x, str) for x in stored):
                e.changed = list(stored)
            elif base is not None:
                keys = set(e.params) | set(base.params)
                e.changed = sorted(k for k in keys if e.params.get(k) != base.params.get(k))
            else:
                e.changed = []
            e.improved = e.ok and (inc is None or self._better(e.value, inc.value))
            for k, v in e.params.items():
                self._coverage.setdefault(k, ParamCoverage()).values[repr(v)] += 1
            if inc is not None and e.outcome in FINISHED:
                for k in e.changed:
                    cov = self._coverage.setdefault(k, ParamCoverage())
                    cov.touched += 1
                    if e.improved:
                        cov.improvements += 1
                        cov.since_improvement = 0
                    else:
                        cov.since_improvement += 1
            if e.improved:
                inc = e
        self._incumbent = inc
        self._dirty = False

    def trials_raw(self) -> list[TrialEntry]:
        return [self._entries[n] for n in sorted(self._entries)]

    @property
    def trials(self) -> list[TrialEntry]:
        """All trials in number order, with derived fields filled in."""
        self._derive()
        return self.trials_raw()

    @property
    def completed(self) -> list[TrialEntry]:
        return [e for e in self.trials if e.ok]

    @property
    def incumbent(self) -> TrialEntry | None:
        """The best completed trial on the validation metric (first one wins ties)."""
        self._derive()
        return self._incumbent

    def coverage(self) -> dict[str, ParamCoverage]:
        """Per parameter: values tried (counts), trials that changed it, trials since it last helped."""
        self._derive()
        return self._coverage

    def tried(self, params: Mapping[str, Any]) -> TrialEntry | None:
        """The earlier trial with exactly this configuration, if any (duplicate check)."""
        want = dict(params)
        return next((e for e in self.trials_raw() if e.params == want), None)

    @property
    def hypotheses(self) -> list[tuple[int | None, Hypothesis]]:
        """All hypotheses, with the trial number they were tested in (None: not yet)."""
        out: list[tuple[int | None, Hypothesis]] = [(e.number, e.hypothesis) for e in self.trials if e.hypothesis]
        return out + [(None, h) for h in self._pending]

    @property
    def reflections(self) -> list[tuple[int, Reflection]]:
        return [(e.number, e.reflection) for e in self.trials if e.reflection]

    @property
    def open_hypotheses(self) -> list[Hypothesis]:
        """Proposed but not yet tested (no trial, or trial not finished), or tested inconclusively."""
        out = list(self._pending)
        for e in self.trials:
            if e.hypothesis is None:
                continue
            if e.outcome in ("running", "waiting") or (e.reflection and e.reflection.verdict == "inconclusive"):
                out.append(e.hypothesis)
        return out

    # ---- rendering for prompts -------------------------------------------------------------
    def render_table(self, max_rows: int = 12) -> str:
        """Compact table of trials: number, change against its parent, metric, delta, status, verdict.

        When there are more than `max_rows` trials, the first trial, the incumbent and the most
        recent ones are shown. Only code-computed fields appear (no LLM text), so it is safe to
        put in a prompt as is.
        """
        rows = self.trials
        inc = self.incumbent
        if len(rows) > max_rows:
            keep = {rows[0].number, inc.number if inc else rows[0].number}
            for e in reversed(rows):  # fill the remaining rows with the most recent trials
                if len(keep) >= max(max_rows, 2):
                    break
                keep.add(e.number)
            rows = [e for e in rows if e.number in keep]
        head = f"trial | change vs parent | {self.metric} | delta vs incumbent | status | verdict"
        lines = [head, "-" * len(head)]
        for e in rows:
            if e.parent is None:
                change = "(baseline)"
            else:
                change = ", ".join(f"{k}={_fmt(e.params.get(k))}" for k in e.changed) or "(no change)"
                change = f"#{e.parent}: {change}"
            val = f"{e.value:.6f}" if e.ok else "-"
            delta = f"{e.value - e.baseline_value:+.6f}" if e.ok and e.baseline_value is not None else "-"
            mark = " *best*" if inc is not None and e.number == inc.number else ""
            verdict = e.reflection.verdict if e.reflection else "-"
            lines.append(f"{e.number} | {change} | {val}{mark} | {delta} | {e.outcome} | {verdict}")
        return "\n".join(lines)

    def render_reflections(self, k: int = 5) -> str:
        """The last k reflections as quoted data (they are LLM text)."""
        items = [f"trial {n}: verdict {r.verdict}; attribution: {r.attribution}; rule: {r.rule};"
                 f" next: {r.next_direction}" for n, r in self.reflections[-k:]]
        return render_for_prompt(items, title="reflections")

    def render_open_hypotheses(self, k: int = 5) -> str:
        """Open hypotheses as quoted data."""
        items = [(h.text or "") + (f" changes={h.changes}" if h.changes else "") + f" (source {h.source})"
                 for h in self.open_hypotheses[:k]]
        return render_for_prompt(items, title="open_hypotheses")


def _parse_hypothesis(v: Any) -> Hypothesis | None:
    if v is None:
        return None
    if isinstance(v, str):
        return Hypothesis(text=v)
    try:
        return Hypothesis.model_validate(v)
    except ValidationError:
        return Hypothesis(text=str(v))


def _parse_reflection(v: Any) -> Reflection | None:
    if not isinstance(v, Mapping):
        return None
    try:
        return Reflection.model_validate(v)
    except ValidationError:
        return None
