"""Plan: what the agent knows before it proposes, rebuilt from the study at every step.

- `observations`: the study's trials as `Observation`s (each with the trial it changed and the
  parameters it changed), from the stored records and the user attrs `observe` returned;
- `study_memory`: the same trials as the memory package's `StudyMemory` (tables, reflections,
  open hypotheses for the prompt);
- `load_transfer` / `insight_hints`: rules from other datasets' cognition summaries and from this
  dataset's long-term insights, as candidate hints and prompt lines;
- `planning_context`: the context the LLM reads (full, and compact for small local models).

Everything is a function of storage and the memory bank, so a resumed study plans the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from virtualmle.agent import prompts
from virtualmle.agent.candidates import CandidateSet, RuleHint, coverage
from virtualmle.agent.diagnostics import Diagnostics, Observation, best_of, diagnose
from virtualmle.agent.space_view import SpaceView
from virtualmle.agent.surrogate import PriorTrial
from virtualmle.records import A_CHANGED, A_PARENT, Outcome, TrialRecord
from virtualmle.search.method import SearchContext


@dataclass
class Transfer:
    """What transfer brought in (loaded once per study)."""

    sources: list[str] = field(default_factory=list)
    hints: list[RuleHint] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    prior: list[PriorTrial] = field(default_factory=list)


def eval_users(ctx: SearchContext) -> int | None:
    """Validation users of the (sliced) dataset, for the noise estimate; None when unknown."""
    users = (ctx.profile or {}).get("users")
    return int(users) if isinstance(users, (int, float)) and not isinstance(users, bool) and users > 0 else None


def observation(view: SpaceView, ctx: SearchContext, rec: TrialRecord, attrs: dict[str, Any],
                before: list[Observation]) -> Observation:
    """One trial as the agent sees it: its parent is the stored one, else the best trial before
    it; its changed parameters are the stored ones, else those that differ from the parent."""
    ok = rec.ok
    params = {n: rec.params.get(n) for n in view.axes if n in rec.params}
    parent = attrs.get(A_PARENT)
    base_obs = next((o for o in before if o.number == parent), None) if isinstance(parent, int) else None
    if base_obs is None and not isinstance(parent, int):
        base_obs = best_of(before)
    changed = attrs.get(A_CHANGED)
    if not (isinstance(changed, list) and all(isinstance(c, str) for c in changed)):
        changed = ([k for k in view.axes if params.get(k) != base_obs.params.get(k)]
                   if base_obs is not None else [])
    return Observation(
        number=rec.number, params=params, value=float(rec.value) if ok else None,  # type: ignore[arg-type]
        state="complete" if ok else rec.outcome.value, curve=rec.curve(ctx.metric), seconds=rec.seconds or None,
        num_params=rec.num_params, stopped="pruned" if rec.outcome is Outcome.PRUNED else rec.stopped,
        last_epoch=_last_epoch(rec), by_epoch=rec.by_epoch(ctx.metric),
        error=None if ok else rec.outcome.failure_class,
        base=base_obs.number if base_obs is not None else (parent if isinstance(parent, int) else None),
        changed=list(changed), attrs=attrs,
    )


def _last_epoch(rec: TrialRecord) -> int | None:
    epochs = [e.get("epoch") for e in rec.epochs if isinstance(e, dict)]
    epochs = [int(e) for e in epochs if isinstance(e, (int, float)) and not isinstance(e, bool)]
    return max(epochs) if epochs else None


def observations(view: SpaceView, ctx: SearchContext, records: list[TrialRecord],
                 attrs_of: Any) -> list[Observation]:
    """``records`` as `Observation`s, in order; ``attrs_of(record)`` gives a trial's user attrs."""
    out: list[Observation] = []
    for rec in records:
        out.append(observation(view, ctx, rec, attrs_of(rec), out))
    return out


def last_diagnostics(obs: list[Observation], users: int | None) -> Diagnostics | None:
    """The diagnosis of the most recent trial against those before it."""
    if not obs:
        return None
    before = obs[:-1]
    return diagnose(obs[-1], before, best_of(before), eval_users=users)


def study_memory(view: SpaceView, ctx: SearchContext, records: list[TrialRecord], attrs_of: Any) -> Any:
    """The trials as the memory package's `StudyMemory`."""
    from virtualmle.memory import StudyMemory

    rows = [{"number": r.number, "params": {n: r.params.get(n) for n in view.axes if n in r.params},
             "value": r.value if r.outcome is Outcome.COMPLETE else None, "outcome": r.outcome,
             "user_attrs": attrs_of(r)} for r in records]
    return StudyMemory.from_records(rows, metric=ctx.metric, study=ctx.study_name,
                                    dataset=ctx.dataset, model=ctx.model)


def load_transfer(bank: Any, ctx: SearchContext, spec: str, k: int, parts: str = "both") -> Transfer:
    """Summaries of similar datasets (``auto``) or the named ones, as hints, prompt lines and
    prior trials; nothing with ``none`` or without a bank. ``parts``: ``both``, ``rules`` (no
    prior trials) or ``trials`` (no rules or prompt lines)."""
    t = Transfer()
    spec = (spec or "none").strip()
    if bank is None or spec.lower() == "none":
        return t
    if spec.lower() == "auto":
        summaries = bank.similar(ctx.profile, ctx.model, k=k, exclude=[ctx.dataset])
    else:
        summaries = bank.get_summaries([n.strip() for n in spec.split(",") if n.strip()], ctx.model)
    for s in summaries:
        t.sources.append(s.dataset)
        if parts != "rules":
            t.prior += [PriorTrial(params=dict(pt.params), value=float(pt.value), study=s.study or s.dataset)
                        for pt in s.trials]
        if parts == "trials":
            continue
        for r in s.applicable_rules(ctx.profile, ctx.model):
            a = r.rule.action
            t.hints.append(RuleHint(param=a.param, direction=a.direction, value=a.value, avoid=a.avoid,
                                    confidence=r.confidence, source="transfer", text=r.text))
            t.lines.append(f"from {s.dataset}: {r.rule.describe()} (confidence {r.confidence:.2f}, "
                           f"evidence {r.evidence}): {r.text}")
        if s.start_config:
            t.lines.append(f"from {s.dataset}: best configuration there changed "
                           + ", ".join(f"{k}={v}" for k, v in list(s.start_config.items())[:6]))
    return t


def insight_hints(bank: Any, ctx: SearchContext) -> tuple[list[RuleHint], str]:
    """This dataset's long-term insights with a rule, as hints (only those with evidence from
    earlier studies: this study's own trials already inform the surrogate), and their prompt text."""
    if bank is None:
        return [], ""
    iset = bank.insights(ctx.dataset, ctx.model)
    hints = []
    for ins in iset.relevant(ctx.profile, ctx.model, k=12):
        if ins.rule is None:
            continue
        refs = list(ins.supporting) + list(ins.contradicting)
        if refs and all(r.study == ctx.study_name for r in refs):
            continue
        a = ins.rule.action
        hints.append(RuleHint(param=a.param, direction=a.direction, value=a.value, avoid=a.avoid,
                              confidence=ins.confidence, source="memory", text=ins.text))
    return hints, iset.render_for_prompt(k=8, profile=ctx.profile) if iset.insights else ""


def planning_context(view: SpaceView, ctx: SearchContext, memory: Any, obs: list[Observation],
                     incumbent: Observation, last: Diagnostics | None, cset: CandidateSet,
                     insights_text: str, transfer: Transfer, plateau_k: int) -> tuple[str, str]:
    """(full planning context, compact form for small local models)."""
    if incumbent.number >= 0 and incumbent.value is not None:
        inc = (f"trial {incumbent.number}: {ctx.metric} {incumbent.value:.6f}; configuration "
               + ", ".join(f"{k}={prompts.fmt(v)}" for k, v in incumbent.params.items()))
    else:
        inc = "none yet (no trial completed)"
    if cset.plateau:
        plateau = (f"PLATEAU: the last {plateau_k} trials changed only "
                   f"{', '.join(cset.stale_params)} without improving; the next change must touch "
                   "another parameter (uncovered first: " + (", ".join(cset.uncovered[:6]) or "none") + ")")
    else:
        plateau = "no plateau; parameters never varied: " + (", ".join(cset.uncovered[:8]) or "none")
    if cset.flat:
        plateau += ("\nFLAT near the incumbent: changing " + ", ".join(cset.flat) + " alone left its "
                    "validation curve as it was; change something else")
    changed_counts: dict[str, int] = {}
    for o in obs:
        for n in o.changed:
            changed_counts[n] = changed_counts.get(n, 0) + 1
    cov_text = prompts.render_coverage(coverage(obs, view), list(view.axes.values()), changed_counts)
    reflections = memory.render_reflections(k=3) if memory.reflections else ""
    opens = memory.render_open_hypotheses(k=4) if memory.open_hypotheses else ""
    diag_text = last.summary() if last is not None else ""
    full = prompts.planning_context(
        dataset=ctx.dataset, profile=ctx.profile, metric=ctx.metric, incumbent=inc,
        table=memory.render_table(max_rows=10), coverage=cov_text,
        open_hypotheses="\n".join(x for x in (opens, reflections) if x),
        insights=insights_text, rules=transfer.lines[:8],
        last_diagnostics=diag_text, plateau=plateau,
    )
    short_inc = (f"trial {incumbent.number}: {ctx.metric} {incumbent.value:.6f}"
                 if incumbent.number >= 0 and incumbent.value is not None else inc)
    compact = prompts.compact_context(dataset=ctx.dataset, profile=ctx.profile, metric=ctx.metric,
                                      incumbent=short_inc, last_diagnostics=diag_text, plateau=plateau,
                                      rules=transfer.lines)
    return full, compact
