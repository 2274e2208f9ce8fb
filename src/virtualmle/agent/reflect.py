"""Reflect: the LLM's verdict, attribution, rule and next direction on a finished trial.

The reply is schema-checked and stored next to the code's verdict (which alone decides keep /
discard); its text is checked for instructions (prompt injection), for degenerate loops and
against the code's facts (`factcheck`): an attribution or rule that disagrees is replaced by
text written from the facts, and the rejection is counted. A
failed or unavailable LLM leaves a ``reflection_error`` and no reflection: the trial's result is
already safe in storage.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from virtualmle.agent import prompts
from virtualmle.agent.diagnostics import Diagnostics
from virtualmle.agent.factcheck import check, code_text, trial_facts
from virtualmle.agent.llm_call import LLMCaller
from virtualmle.agent.schemas import reflection_schema
from virtualmle.agent.space_view import SpaceView
from virtualmle.errors import LLMBudgetExceeded, LLMOutputError, LLMUnavailableError
from virtualmle.records import A_REFLECTION
from virtualmle.search.method import SearchContext


def reflect(llm: LLMCaller, ctx: SearchContext, view: SpaceView, *, number: int, hypothesis: Any,
            diag: Diagnostics, memory: Any, insights_text: str, compact: bool, seed: int,
            attrs: dict[str, Any], evidence: Any = None) -> dict[str, Any] | None:
    """Ask the LLM to reflect on trial ``number``; store the result (or the error) in ``attrs``.

    Args:
        hypothesis: the trial's stored hypothesis (a dict with ``text``, or a string).
        memory: the study's `StudyMemory` including this trial (its table is the context).
        compact: a small local model: the trial itself is all it reflects on.
        evidence: the study's pooled `MoveEvidence` for the trial's move (for code-written text).
    """
    from virtualmle.memory import Action, Reflection, Rule, regime_condition

    hyp = hypothesis or {}
    hyp_text = hyp.get("text", "") if isinstance(hyp, dict) else str(hyp)
    change = ", ".join(f"{k} {prompts.fmt(a)} -> {prompts.fmt(b)}" for k, (a, b) in diag.changed.items()) or "(none)"
    if compact:
        context, insights_text = "", ""
    else:
        context = "## Trials so far (computed by code)\n" + memory.render_table(max_rows=8)
    messages = prompts.reflection_messages(context=context, change=change, hypothesis=hyp_text,
                                           diagnostics=diag.summary(), code_verdict=diag.code_verdict,
                                           insights=insights_text, model=ctx.model, metric=ctx.metric)
    try:
        reply = llm.call(messages, reflection_schema(view.names, compact=compact), run_dir=ctx.run_dir,
                         purpose="reflect", seed=seed, unavailable="LLM backend unavailable during reflect")
    except LLMOutputError as exc:
        attrs["reflection_error"] = f"llm_output_error: {str(exc)[:160]}"
        return None
    except (LLMUnavailableError, LLMBudgetExceeded) as exc:
        # The trial's result is safe in storage; the next propose retries and stops cleanly.
        attrs["reflection_error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
        return None
    action_rule = None
    if reply.rule.param != "none" and reply.rule.direction in ("up", "down"):
        axis = view.axes.get(reply.rule.param)
        if axis is not None and axis.ordered:
            try:
                action_rule = Rule(condition=regime_condition(ctx.profile), backbone=ctx.model,
                                   action=Action(param=reply.rule.param, direction=reply.rule.direction))
            except ValidationError:
                action_rule = None
    refl = Reflection(verdict=reply.verdict, attribution=reply.attribution,
                      rule=(reply.rule.text + (f" (when: {reply.rule.condition})" if reply.rule.condition else "")),
                      next_direction=reply.next_direction, action_rule=action_rule)
    out = refl.model_dump(mode="json")
    out["llm_ops"] = [op.model_dump() for op in reply.insight_ops]
    out["agrees_with_code"] = reply.verdict == diag.code_verdict
    flags = [k for k in ("attribution", "rule", "next_direction") if prompts.looks_like_instruction(out[k])]
    if flags:
        out["injection_flags"] = flags
    out["degenerate"] = [k for k in ("attribution", "rule") if prompts.degenerate(out[k])]
    gate_text(out, diag, view, evidence)
    attrs[A_REFLECTION] = out
    return out


def gate_text(out: dict[str, Any], diag: Diagnostics, view: SpaceView, evidence: Any = None) -> int:
    """Replace the reflection's attribution and rule with the code's facts where the model's text
    disagrees with them (`factcheck.check`); returns how many texts were rejected.

    The rejected texts stay in ``rejected_text`` for the record; ``fact_check`` says why. A rule
    written by code is the pooled evidence's line when the move is established, else empty (no
    rule from this trial).
    """
    facts = trial_facts(diag, list(view.names))
    why = {"attribution": check(out.get("attribution", ""), facts),
           "rule": check(out.get("rule", ""), facts, verdict=out.get("verdict"))}
    for k in ("attribution", "rule"):
        if why[k] is None and k in out.get("degenerate", []):
            why[k] = "degenerate text"
    rejected = {k: str(out.get(k, ""))[:200] for k, w in why.items() if w}
    if why["attribution"]:
        out["attribution"] = code_text(diag, evidence)
    if why["rule"]:
        out["rule"] = (evidence.describe() if evidence is not None and evidence.established else "")
        out["action_rule"] = None
    out["fact_check"] = why
    if rejected:
        out["rejected_text"] = rejected
    return len(rejected)
