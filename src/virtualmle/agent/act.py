"""Act: choose the next configuration among the ranked candidates.

- `act_hybrid`: the surrogate's near-tied top candidates are shown to the LLM in a random order
  and it picks one (a label from an enum) with a hypothesis; without a near tie, or when the LLM
  fails, the surrogate's top candidate is taken with a hypothesis written by code.
- `act_llm`: the LLM proposes ONE change itself; code validates, snaps and deduplicates it and
  re-asks with the reason on a refusal, then falls back to the surrogate's top candidate.

Each returns a `Choice`: the candidate, its hypothesis and what happened (stored with the trial).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from virtualmle.agent import prompts
from virtualmle.agent.candidates import Candidate
from virtualmle.agent.factcheck import check, hypothesis_facts
from virtualmle.agent.llm_call import LLMCaller
from virtualmle.agent.schemas import candidate_labels, change_schema, pick_schema
from virtualmle.agent.space_view import ProposalRejected, SpaceView
from virtualmle.errors import LLMOutputError
from virtualmle.search.method import SearchContext

# Where candidates come from, by kind (for the ``agent`` attr): evidence-backed local moves
# are "rule" candidates, plain neighbours "local", whole configurations keep their source.
RULE_SOURCES = {"diagnostic", "transfer", "memory", "momentum", "combine"}


@dataclass
class Choice:
    """What the Act step chose, and the record of how (merged into the ``agent`` attr)."""

    candidate: Candidate
    hypothesis: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    llm_seconds: float = 0.0


def kind_of(c: Candidate) -> str:
    """local / rule / global / tpe / random / llm: where a candidate came from."""
    if c.source in ("global", "tpe", "random", "llm"):
        return c.source
    return "rule" if set(c.sources or [c.source]) & RULE_SOURCES else "local"


def pool_counts(ranked: list[Candidate]) -> dict[str, int]:
    """How many candidates of each kind the ranking saw."""
    out = {"local": 0, "rule": 0, "global": 0, "tpe": 0}
    for c in ranked:
        k = kind_of(c)
        out[k] = out.get(k, 0) + 1
    return out


def code_hypothesis(c: Candidate) -> dict[str, Any]:
    """The hypothesis code writes for a candidate it chose itself (no LLM, or a fallback)."""
    return {"text": f"{c.describe()} should improve the metric: {c.reason}",
            "mechanism": f"evidence: {', '.join(c.sources or [c.source])}",
            "risk": "within run-to-run noise, or the move overshoots",
            "changes": {k: v[1] for k, v in c.changed.items()}, "source": "code"}


def _llm_hypothesis(reply: Any, c: Candidate, names: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The model's hypothesis for candidate `c` when it agrees with the move (`factcheck`);
    otherwise the code's, with the rejected text and the reason kept for the record."""
    why = check(reply.hypothesis, hypothesis_facts(c.changed, list(names)))
    if why is not None:
        return {**code_hypothesis(c), "llm_rejected": why, "rejected_text": str(reply.hypothesis)[:200]}
    return {"text": reply.hypothesis, "mechanism": reply.mechanism, "risk": reply.risk,
            "changes": {k: v[1] for k, v in c.changed.items()}, "source": "llm"}


@dataclass(frozen=True)
class ActSettings:
    """The agent's switches the Act step reads (see `AgentConfig`)."""

    shortlist: int
    pick_margin: float
    acquisition: str
    max_changes: int
    reasks: int
    compact: bool
    seed: int


def act_hybrid(llm: LLMCaller, ctx: SearchContext, context: str, ranked: list[Candidate], s: ActSettings,
               rng: np.random.Generator) -> Choice:
    """Show the near-tied top candidates in a random order; the LLM picks one."""
    top = ranked[0]
    # EI values shrink as the search converges: there a near tie is relative to the best EI
    # (within pick_margin of it), so a position-biased model gets no more say late than early.
    margin = s.pick_margin * (abs(top.score) if s.acquisition == "ei" else 1.0)  # type: ignore[arg-type]
    near = [c for c in ranked[: s.shortlist] if c.score >= top.score - margin]  # type: ignore[operator]
    info: dict[str, Any] = {"surrogate_top": top.describe(),
                            "near_ties": sum(1 for c in ranked[:4] if c.score >= top.score - margin)}  # type: ignore[operator]
    if len(near) < 2:
        info["pick"] = {"shown": 1, "by": "surrogate (no near tie)"}
        return Choice(top, code_hypothesis(top), info)
    order = list(rng.permutation(len(near)))
    shown = [near[i] for i in order]
    labels = candidate_labels(len(shown))
    if s.compact:  # prompt tokens are the CPU cost of a small local model: list briefly
        options = [(lab, f"{c.describe(max_changes=4)}  [why: {c.reason}]") for lab, c in zip(labels, shown)]
    else:
        options = [(lab, f"{c.describe()}  [why: {c.reason}; evidence: {', '.join(c.sources or [c.source])}]")
                   for lab, c in zip(labels, shown)]
    messages = prompts.pick_messages(context, options, model=ctx.model, metric=ctx.metric)
    t = time.perf_counter()
    try:
        reply = llm.call(messages, pick_schema(len(shown), compact=s.compact), run_dir=ctx.run_dir, purpose="pick",
                         seed=s.seed * 1000 + len(ctx.history), unavailable="LLM backend unavailable during pick")
    except LLMOutputError as exc:
        info["fallback"] = f"llm_output_error: {str(exc)[:160]}"
        info["pick"] = {"shown": len(shown), "by": "surrogate (LLM failed)"}
        return Choice(top, code_hypothesis(top), info, time.perf_counter() - t)
    llm_s = time.perf_counter() - t
    i = labels.index(reply.choice)
    chosen = shown[i]
    info["pick"] = {"shown": len(shown), "by": "llm", "label": reply.choice, "position": i,
                    "surrogate_rank": ranked.index(chosen), "options": [c.describe() for c in shown]}
    hyp = _llm_hypothesis(reply, chosen)
    said = {"text": reply.hypothesis, "mechanism": reply.mechanism, "risk": reply.risk}  # the model's, kept or not
    info["injection_flags"] = [f"llm hypothesis {key}" for key, v in said.items() if prompts.looks_like_instruction(v)]
    return Choice(chosen, hyp, info, llm_s)


def validate_change(view: SpaceView, incumbent: dict[str, Any], changes: list[tuple[str, Any]],
                    tried: set[str], max_changes: int) -> Candidate:
    """Check an LLM-proposed change against the space; raise `ProposalRejected` with a reason.

    Refused: unknown parameters, garbage or out-of-range values, more than ``max_changes``
    parameters, no change, constraint violations and configurations already tried (or running).
    """
    cfg, changed = view.apply_changes(incumbent, changes, max_changes=max_changes, tried=tried)
    return Candidate(cfg, changed, "llm", "proposed by the LLM", sources=["llm"])


def act_llm(llm: LLMCaller, ctx: SearchContext, view: SpaceView, context: str, incumbent: dict[str, Any],
            tried: set[str], ranked: list[Candidate], s: ActSettings) -> Choice:
    """The LLM proposes ONE change; code validates, snaps, deduplicates and re-asks."""
    schema = change_schema(view.names, s.max_changes)
    refusals: list[dict[str, str]] = []
    error: str | None = None
    llm_s = 0.0
    for attempt in range(s.reasks + 1):
        messages = prompts.change_messages(context, incumbent, list(view.axes.values()), model=ctx.model,
                                           metric=ctx.metric, max_changes=s.max_changes, error=error)
        t = time.perf_counter()
        try:
            reply = llm.call(messages, schema, run_dir=ctx.run_dir, purpose="propose",
                             seed=s.seed * 1000 + len(ctx.history) * 10 + attempt,
                             temperature=0.0 if attempt == 0 else 0.7,
                             unavailable="LLM backend unavailable during propose")
        except LLMOutputError as exc:
            llm_s += time.perf_counter() - t
            refusals.append({"reason": "llm_output_error", "detail": str(exc)[:160]})
            break
        llm_s += time.perf_counter() - t
        try:
            cand = validate_change(view, incumbent, [(c.name, c.value) for c in reply.changes], tried, s.max_changes)
        except ProposalRejected as exc:
            refusals.append({"reason": exc.reason, "detail": str(exc)[:160]})
            error = str(exc)
            continue
        return Choice(cand, _llm_hypothesis(reply, cand, view.names), {"refusals": refusals}, llm_s)
    top = ranked[0]
    return Choice(top, code_hypothesis(top), {"refusals": refusals, "fallback": "llm proposals refused: "
                                              + ", ".join(r["reason"] for r in refusals)}, llm_s)
