"""Remember: long-term insight operations after each trial, and the cognition summary at the end.

After a trial (`remember`): code-derived operations from the study's pooled evidence on the move
the trial made (a rule only beyond noise; a multi-parameter trial is evidence about that
combination, never per-parameter credit; a failure is evidence against the move), the
reflection's generalised rule, and the LLM's own insight operations once validated; the bank
applies them under its lock. At the end of the study
(`distil`): the whole study distilled into a cognition summary that later studies transfer from.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from virtualmle.agent import prompts
from virtualmle.agent.diagnostics import Diagnostics, Observation
from virtualmle.agent.factcheck import check, trial_facts
from virtualmle.agent.space_view import SpaceView
from virtualmle.records import A_HYPOTHESIS
from virtualmle.search.method import SearchContext

logger = logging.getLogger(__name__)


def trial_evidence(memory: Any, o: Observation, diag: Diagnostics) -> tuple[Any, Any]:
    """The study's pooled evidence and this trial's pair in it (None when the trial made no
    comparable move: the first trial, a parent that failed, a pruned trial)."""
    from virtualmle.memory import study_evidence

    for e in memory.trials:
        if e.number == o.number and not e.diagnostics:
            e.diagnostics = diag.to_dict()  # not stored yet: this step computes it
    ev = study_evidence(memory.trials, direction=memory.direction, noise=diag.noise)
    pair = next((p for p in ev.pairs if p.trial == o.number), None)
    return ev, pair


def base_rejections(reflection: dict[str, Any] | None, hypothesis: Any) -> int:
    """LLM texts of a trial replaced by code-written ones: reflection fields and the hypothesis."""
    return len((reflection or {}).get("rejected_text") or {}) + int(isinstance(hypothesis, dict)
                                                                   and "llm_rejected" in hypothesis)


def remember(bank: Any, ctx: SearchContext, view: SpaceView, o: Observation, diag: Diagnostics,
             memory: Any, reflection: dict[str, Any] | None) -> dict[str, Any]:
    """Apply the trial's insight operations to the bank; returns what was applied and rejected.

    Args:
        memory: the study's `StudyMemory` including this trial: every trial that made the same
            move (or combination) is evidence for the code's operations (`ops_from_evidence`).
    """
    from virtualmle.memory import InsightOp, TrialRef, ops_from_evidence

    result: dict[str, Any] = {"applied": [], "rejected": []}
    iset = bank.insights(ctx.dataset, ctx.model)
    ev, pair = trial_evidence(memory, o, diag)
    code_ops = []
    if pair is not None:
        code_ops = ops_from_evidence(iset, study=ctx.study_name, pair=pair, evidence=ev.of(pair),
                                     profile=ctx.profile, failure=o.error or "")
    if code_ops:
        r = bank.apply_ops(ctx.dataset, ctx.model, code_ops, profile=ctx.profile, source="code")
        result["applied"] += r.applied
        result["rejected"] += [f"{op.op} {op.id or ''}: {why}" for op, why in r.rejected]
    llm_ops = []
    op = rule_op(ctx, o, reflection)
    if op is not None:
        llm_ops.append(op)
    facts = trial_facts(diag, list(view.names))
    rejected = base_rejections(reflection, o.attrs.get(A_HYPOTHESIS))
    for raw in (reflection or {}).get("llm_ops", []):
        text = raw.get("text") or ""
        if raw.get("op") in ("ADD", "EDIT"):
            why = "degenerate text" if prompts.degenerate(text) else check(text, facts)
            if why:
                result["rejected"].append(f"{raw.get('op')}: {why}"[:200])
                rejected += 1
                continue
        try:
            llm_ops.append(InsightOp(op=raw["op"], id=raw.get("insight_id") or None, text=text or None,
                                     evidence=[TrialRef(study=ctx.study_name, trial=o.number)]))
        except ValidationError as exc:
            result["rejected"].append(f"{raw.get('op')} {raw.get('insight_id', '')}: "
                                      f"{exc.errors()[0].get('msg', 'invalid')}"[:200])
    result["text_rejections"] = rejected
    if rejected:  # set per trial, not added: a replayed observe counts once
        def count(iset: Any) -> None:
            iset.text_rejections[f"{ctx.study_name}#{o.number}"] = rejected

        bank.update_insights(ctx.dataset, ctx.model, count)
    if llm_ops:
        r = bank.apply_ops(ctx.dataset, ctx.model, llm_ops, profile=ctx.profile, source="llm")
        result["applied"] += r.applied
        result["rejected"] += [f"{op.op} {op.id or ''}: {why}"[:200] for op, why in r.rejected]
    result["code_ops"] = len(code_ops)
    result["llm_ops"] = len(llm_ops)
    return result


def rule_op(ctx: SearchContext, o: Observation, reflection: dict[str, Any] | None) -> Any:
    """The reflection's generalised rule as a text-only ADD, when the model wrote it and it passed
    the fact check (`reflect.gate_text`); None otherwise.

    Machine-actionable rules come from the code's pooled evidence (`ops_from_evidence`) only:
    a model's sentence can inform a later prompt but never steer candidates or transfer.
    """
    from virtualmle.memory import InsightOp, TrialRef

    r = reflection or {}
    text = r.get("rule") or ""
    if "fact_check" not in r or "rule" in (r.get("rejected_text") or {}) or prompts.degenerate(text):
        return None
    try:
        return InsightOp(op="ADD", text=text, evidence=[TrialRef(study=ctx.study_name, trial=o.number)])
    except ValidationError:
        return None


def distil(bank: Any, ctx: SearchContext, memory: Any) -> tuple[Path, int]:
    """Distil the study (its `StudyMemory`) into a cognition summary in the bank; returns the
    summary's path and its number of rules."""
    from virtualmle.memory import distill

    summary = distill(memory, ctx.profile, ctx.model, insights=bank.insights(ctx.dataset, ctx.model),
                      dataset=ctx.dataset)
    path = bank.save_summary(summary)
    logger.info("cognition summary of %s written to %s", ctx.study_name, path)
    return path, len(summary.rules)
