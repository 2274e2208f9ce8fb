"""Long-term memory for one dataset x backbone: insights edited by ADD / UPVOTE / DOWNVOTE / EDIT /
REMOVE operations.

The LLM returns `InsightOps` (a pydantic model, so it can be requested as schema-checked JSON);
code produces the same operations deterministically from the study's pooled evidence
(`ops_from_evidence`), so memory grows even when the LLM contributes nothing. An operation naming an
insight id that does not exist is rejected with a clear reason and not applied.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from virtualmle.memory.errors import InsightOpError
from virtualmle.memory.evidence import MoveEvidence, Pair, key_of
from virtualmle.memory.rules import Action, Rule, regime_condition
from virtualmle.memory.text import render_for_prompt, sanitize_text

PRUNE_THRESHOLD = 0  # insights with votes <= this are removed
MAX_INSIGHTS = 200
# Trial identities whose operations were applied, kept so a replayed observe step (a study
# resumed after a kill) changes nothing; the oldest are forgotten past this many.
MAX_APPLIED = 5000
# Most moves an insight about a combination lists; a trial that changed more is no reusable evidence.
MAX_COMBO = 8


def now() -> str:
    """UTC timestamp, ISO 8601, second resolution."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


class TrialRef(BaseModel):
    """A trial in some study: the evidence an insight rests on."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    study: str = Field(max_length=200)
    trial: int = Field(ge=0)

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        # Accept "study#12" (the Markdown / prompt spelling) as well as {"study":..,"trial":..}.
        if isinstance(v, str) and "#" in v:
            study, _, num = v.rpartition("#")
            return {"study": study, "trial": int(num)}
        return v

    @field_validator("study")
    @classmethod
    def _study(cls, v: str) -> str:
        return sanitize_text(v, 200)

    def __str__(self) -> str:
        return f"{self.study}#{self.trial}"


class Insight(BaseModel):
    """One piece of long-term knowledge: text for people and LLMs, a rule for code."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^ins-[0-9]{1,6}$")
    text: str
    rule: Rule | None = None
    combo: list[Action] = Field(default_factory=list)  # moves made together (text-only evidence)
    votes: int = 1
    supporting: list[TrialRef] = Field(default_factory=list)
    contradicting: list[TrialRef] = Field(default_factory=list)
    source: Literal["code", "llm", "human"] = "code"
    created: str = Field(default_factory=now)
    updated: str = Field(default_factory=now)

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        return sanitize_text(v)

    @property
    def confidence(self) -> float:
        """Laplace-smoothed share of supporting evidence, in (0, 1)."""
        s, c = len(self.supporting), len(self.contradicting)
        return (s + 1) / (s + c + 2)

    @property
    def evidence(self) -> int:
        return len(self.supporting) + len(self.contradicting)


OpName = Literal["ADD", "UPVOTE", "DOWNVOTE", "EDIT", "REMOVE"]


class InsightOp(BaseModel):
    """One edit of the insight list. A flat model (not a union) so small models' grammars stay simple.

    - ADD: `text` (and optionally `rule`, `evidence`) -> a new insight with 1 vote.
    - UPVOTE / DOWNVOTE: `id`; `evidence` trials are added to supporting / contradicting.
    - EDIT: `id` and a new `text` and / or `rule`.
    - REMOVE: `id`.
    """

    model_config = ConfigDict(extra="forbid")
    op: OpName
    id: str | None = Field(default=None, max_length=12)
    text: str | None = None
    rule: Rule | None = None
    combo: list[Action] = Field(default_factory=list, max_length=MAX_COMBO)
    evidence: list[TrialRef] = Field(default_factory=list, max_length=20)

    @field_validator("text")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        return None if v is None else sanitize_text(v)

    @model_validator(mode="after")
    def _fields(self) -> InsightOp:
        if self.op == "ADD":
            if not self.text:
                raise ValueError("ADD needs a non-empty 'text'")
        elif not self.id:
            raise ValueError(f"{self.op} needs the 'id' of an existing insight")
        if self.op == "EDIT" and not self.text and self.rule is None:
            raise ValueError("EDIT needs a new 'text' or 'rule'")
        return self


class InsightOps(BaseModel):
    """What the LLM returns after a reflection: zero or more operations."""

    model_config = ConfigDict(extra="forbid")
    ops: list[InsightOp] = Field(default_factory=list, max_length=8)


# An insight with this many votes or supporting trials, or one a person wrote, is protected:
# an EDIT or REMOVE from the LLM or code becomes a proposal for a person instead.
PROTECT_EVIDENCE = 3


class ChangeProposal(BaseModel):
    """An EDIT / REMOVE of a protected insight, kept for a person to apply (``memory show``)."""

    model_config = ConfigDict(extra="forbid")
    op: Literal["EDIT", "REMOVE"]
    id: str
    text: str | None = None
    rule: Rule | None = None
    evidence: list[TrialRef] = Field(default_factory=list)
    source: str = "llm"
    reason: str = ""
    created: str = Field(default_factory=now)


class ApplyResult(BaseModel):
    """Outcome of `InsightSet.apply`: ids touched, and rejected operations with the reason."""

    applied: list[str] = Field(default_factory=list)
    rejected: list[tuple[InsightOp, str]] = Field(default_factory=list)
    pruned: list[str] = Field(default_factory=list)
    replayed: bool = False  # the same trial's operations were applied before: nothing changed
    proposed: list[str] = Field(default_factory=list)  # protected ids: recorded as proposals


class InsightSet(BaseModel):
    """The long-term memory of one dataset x backbone (the content of one bank file)."""

    model_config = ConfigDict(extra="forbid")
    dataset: str
    model: str
    profile: dict[str, Any] = Field(default_factory=dict)
    next_id: int = 1
    insights: list[Insight] = Field(default_factory=list)
    applied: list[str] = Field(default_factory=list)  # "study#trial:source" already applied
    proposals: list[ChangeProposal] = Field(default_factory=list)  # for a person to decide
    # LLM texts that disagreed with the code's facts and were not stored, per "study#trial"
    # (set, not added: observing a trial again counts it once)
    text_rejections: dict[str, int] = Field(default_factory=dict)

    @property
    def rejected_total(self) -> int:
        """LLM texts rejected by the fact check over every study that wrote here."""
        return sum(self.text_rejections.values())

    def get(self, insight_id: str) -> Insight | None:
        return next((i for i in self.insights if i.id == insight_id), None)

    def find_action(self, action: Action) -> Insight | None:
        """The insight whose rule makes the same move (same param / direction / value / avoid)."""
        key = action.key()
        return next((i for i in self.insights if i.rule and i.rule.action.key() == key), None)

    def find_combo(self, combo: list[Action]) -> Insight | None:
        """The insight about the same combination of moves (order does not matter)."""
        if not combo:
            return None
        key = key_of(tuple(combo))
        return next((i for i in self.insights if i.combo and key_of(tuple(i.combo)) == key), None)

    def apply(self, ops: list[InsightOp] | InsightOps, *, source: str = "llm",
              strict: bool = False, prune_threshold: int = PRUNE_THRESHOLD) -> ApplyResult:
        """Apply operations in order; an invalid one is rejected (or raises if `strict`).

        With `strict=True` nothing is applied when any operation is invalid (checked first).
        """
        ops = ops.ops if isinstance(ops, InsightOps) else list(ops)
        key = replay_key(ops, source)
        if key is not None and key in self.applied:
            return ApplyResult(replayed=True)
        if strict:
            trial = self.model_copy(deep=True)
            res = trial.apply(ops, source=source, strict=False, prune_threshold=prune_threshold)
            if res.rejected:
                op, why = res.rejected[0]
                raise InsightOpError(f"{op.op} {op.id or ''}: {why}".replace("  ", " "))
            self.__dict__.update(trial.__dict__)
            return res
        result = ApplyResult()
        stamp = now()
        for op in ops:
            why = self._apply_one(op, source, stamp, result)
            if why:
                result.rejected.append((op, why))
        result.pruned = self.prune(prune_threshold)
        if key is not None:
            self.applied = [*self.applied, key][-MAX_APPLIED:]
        return result

    def _apply_one(self, op: InsightOp, source: str, stamp: str, result: ApplyResult) -> str | None:
        if op.op == "ADD":
            if len(self.insights) >= MAX_INSIGHTS:
                return f"the list already holds {MAX_INSIGHTS} insights"
            dup = next((i for i in self.insights if i.text.lower() == op.text.lower()), None)
            if dup is None and op.rule is not None:
                dup = self.find_action(op.rule.action)
            if dup is None and op.combo:
                dup = self.find_combo(op.combo)
            if dup is not None:  # the same knowledge again is a vote, not a new item
                if source == "code" and dup.source == "code" and (op.rule is not None or op.combo):
                    dup.text = op.text  # the code's facts, now pooled over more trials
                if _counted(dup.supporting, op.evidence):
                    result.applied.append(dup.id)
                    return None  # the same measurement again: one vote
                dup.votes += 1
                _add_refs(dup.supporting, op.evidence)
                dup.updated = stamp
                result.applied.append(dup.id)
                return None
            ins = Insight(id=f"ins-{self.next_id}", text=op.text, rule=op.rule, combo=list(op.combo), votes=1,
                          supporting=list(dict.fromkeys(op.evidence)),
                          source=source if source in ("code", "llm", "human") else "llm",
                          created=stamp, updated=stamp)
            self.next_id += 1
            self.insights.append(ins)
            result.applied.append(ins.id)
            return None
        ins = self.get(op.id or "")
        if ins is None:
            known = ", ".join(i.id for i in self.insights[:12]) or "none"
            return f"no insight with id {op.id!r} in {self.dataset} x {self.model} (known: {known})"
        if op.op in ("EDIT", "REMOVE") and source != "human" and protected(ins):
            # One reply cannot destroy what a person wrote or many trials support.
            prop = ChangeProposal(op=op.op, id=ins.id, text=op.text, rule=op.rule, evidence=list(op.evidence),
                                  source=source, created=stamp,
                                  reason=f"{ins.id} is {'written by a person' if ins.source == 'human' else 'well supported'}"
                                         f" (votes {ins.votes}, {len(ins.supporting)} supporting trials)")
            if not any(p.op == prop.op and p.id == prop.id and p.text == prop.text for p in self.proposals):
                self.proposals.append(prop)
            result.proposed.append(ins.id)
            return None
        if op.op == "UPVOTE":
            if not _counted(ins.supporting, op.evidence):
                ins.votes += 1
                _add_refs(ins.supporting, op.evidence)
        elif op.op == "DOWNVOTE":
            if not _counted(ins.contradicting, op.evidence):
                ins.votes -= 1
                _add_refs(ins.contradicting, op.evidence)
        elif op.op == "EDIT":
            if op.text:
                ins.text = op.text
            if op.rule is not None:
                ins.rule = op.rule
        elif op.op == "REMOVE":
            self.insights.remove(ins)
            result.applied.append(ins.id)
            return None
        ins.updated = stamp
        result.applied.append(ins.id)
        return None

    def prune(self, threshold: int = PRUNE_THRESHOLD) -> list[str]:
        """Remove insights with votes <= `threshold`; returns their ids."""
        gone = [i.id for i in self.insights if i.votes <= threshold]
        self.insights = [i for i in self.insights if i.votes > threshold]
        return gone

    def ranked(self) -> list[Insight]:
        """Insights by votes, then confidence, then recency."""
        return sorted(self.insights, key=lambda i: (i.votes, i.confidence, i.updated), reverse=True)

    def relevant(self, profile: dict | None = None, model: str | None = None, k: int = 8) -> list[Insight]:
        """Top-k insights whose rule matches (or that have no rule), best first."""
        out = [i for i in self.ranked() if i.rule is None or i.rule.matches(profile or self.profile, model or self.model)]
        return out[:k]

    def render_for_prompt(self, k: int = 8, profile: dict | None = None) -> str:
        """The top insights as inert, quoted data lines with id, votes and rule."""
        items = self.relevant(profile, self.model, k)
        lines = [f"{i.id} (votes {i.votes}, confidence {i.confidence:.2f}"
                 + (f", rule: {i.rule.describe()}" if i.rule else "") + f"): {i.text}" for i in items]
        return render_for_prompt(lines, title="insights",
                                 attrs={"dataset": self.dataset, "model": self.model})


def protected(ins: Insight) -> bool:
    """Whether an insight is a person's or well supported (changes to it need a person)."""
    return ins.source == "human" or ins.votes >= PROTECT_EVIDENCE or len(ins.supporting) >= PROTECT_EVIDENCE


def replay_key(ops: list[InsightOp], source: str) -> str | None:
    """The identity of one trial's batch of operations: ``study#trial:source``.

    Operations that all cite exactly one trial as evidence come from observing that trial; the
    same batch again is a replay (a resumed study observing the trial a second time). Operations
    without evidence (a person's edits) have no identity and always apply.
    """
    refs = {r for op in ops for r in op.evidence}
    if len(refs) != 1 or any(not op.evidence for op in ops):
        return None
    return f"{next(iter(refs))}:{source}"


def _counted(target: list[TrialRef], refs: list[TrialRef]) -> bool:
    """Whether every trial in ``refs`` is already counted in ``target`` (empty refs: never)."""
    return bool(refs) and all(r in target for r in refs)


def _add_refs(target: list[TrialRef], refs: list[TrialRef]) -> None:
    for r in refs:
        if r not in target:
            target.append(r)


def ops_from_evidence(
    insights: InsightSet,
    *,
    study: str,
    pair: Pair,
    evidence: MoveEvidence,
    profile: dict | None = None,
    failure: str = "",
) -> list[InsightOp]:
    """Deterministic insight operations for one trial, judged on all the study's evidence.

    `pair` is the trial against its parent; `evidence` pools every trial of the study that made
    the same move (or, for a trial that changed several parameters, the same combination). Nothing
    is claimed unless the pooled effect is beyond noise (`MoveEvidence.established`); within noise,
    a code rule for the same move that this trial contradicts gets a DOWNVOTE. Beyond noise:

    - one parameter changed: an ADD of the rule (``raise lr``, or ``avoid raising lr`` when it
      hurt or failed) with the code's facts as text; an existing rule making the same move gets a
      vote and its text refreshed instead. The trial's own delta must agree with the pooled
      direction; a trial that disagrees is a DOWNVOTE of the rule. A claim for the opposite move
      gets a DOWNVOTE.
    - several parameters changed: an ADD of a text-only insight about the combination (its
      `combo` lists the moves), never one rule per parameter; more than `MAX_COMBO` changes at
      once (a jump across a large space) is evidence about no reusable combination: no claim.

    Every operation cites only this trial, so the batch keeps its replay identity
    ``study#trial:code`` (a re-observed trial changes nothing).
    """
    ref = TrialRef(study=study, trial=pair.trial)
    if len(pair.moves) > MAX_COMBO:
        return []
    if not evidence.established:
        # No claim; but a rule already stored for this move that this trial contradicts loses a vote.
        if len(pair.moves) != 1:
            return []
        up = pair.delta is not None and pair.delta > 0
        held = [insights.find_action(pair.moves[0].model_copy(update={"avoid": a})) for a in (False, True)]
        return [InsightOp(op="DOWNVOTE", id=ins.id, evidence=[ref]) for ins, avoid in zip(held, (False, True))
                if ins is not None and ins.source == "code" and up == avoid]
    helped = evidence.helped
    agrees = (pair.delta is not None and (pair.delta > 0) == helped) or (pair.failed and not helped)
    facts = evidence.describe(pair) + (f" ({failure})" if pair.failed and failure else "")
    where = f"on {insights.dataset} ({insights.model})"
    if len(pair.moves) > 1:
        combo = [m.model_copy(update={"avoid": not helped}) for m in pair.moves]
        same = insights.find_combo(combo)
        if not agrees:
            return [InsightOp(op="DOWNVOTE", id=same.id, evidence=[ref])] if same is not None else []
        verdict = "helped" if helped else ("failed" if evidence.failures and not evidence.deltas else "hurt")
        text = (f"together {verdict}: {facts} {where}; evidence about these changes together, "
                "not about any one of them alone")
        return [InsightOp(op="ADD", text=text, combo=combo, evidence=[ref])]
    action = pair.moves[0].model_copy(update={"avoid": not helped})
    same = insights.find_action(action)
    opposite = insights.find_action(action.model_copy(update={"avoid": helped}))
    if not agrees:
        return [InsightOp(op="DOWNVOTE", id=same.id, evidence=[ref])] if same is not None else []
    cond = regime_condition(profile if profile is not None else insights.profile)
    ops = [InsightOp(op="ADD", text=f"{action.describe()}: {facts} {where}",
                     rule=Rule(condition=cond, backbone=insights.model, action=action), evidence=[ref])]
    if opposite is not None:  # evidence against the opposite claim
        ops.append(InsightOp(op="DOWNVOTE", id=opposite.id, evidence=[ref]))
    return ops
