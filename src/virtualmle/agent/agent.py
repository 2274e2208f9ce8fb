"""The VirtualMLE agent: plan, act, observe, reflect, remember; one step per trial.

The agent is a `virtualmle.search.method.Method`, so it runs through the same loop, executor and
Optuna storage as grid / random / TPE / OPRO. It keeps no state that storage does not have: every
call rebuilds the study's short-term memory from ``ctx.history`` (and the user attrs stored with
each trial), so a resumed study continues exactly where it stopped.

One step:

1. Trial 1 is the backbone's default configuration.
2. Plan (`plan`): a context from memory (profile, incumbent, trials table, coverage, diagnostics, open
   hypotheses, insights, transferred rules; LLM text quoted as data).
3. Act: candidates generated in code (`candidates`: 1-2 parameter moves of the incumbent, one
   function per source) plus, in hybrid mode, global ones (a Latin-hypercube sample of the space
   and an independent Optuna TPE sampler's suggestions), ranked by the expected improvement under
   a GP surrogate plus a small bonus for their prior evidence (`surrogate.rank_candidates`).
   ``hybrid`` mode shows the LLM the near-tied top few in a random order and it picks one (a
   label from an enum) with a hypothesis; ``llm`` mode lets it propose one change directly, which
   code validates, snaps and deduplicates, re-asking on a refusal (`act`). Any LLM failure falls
   back to the surrogate's top candidate, recorded.
4. Observe: diagnostics in code (`diagnostics.diagnose`); keep / discard by validation metric only.
5. Reflect (`reflect`): the LLM's verdict, attribution, rule and next direction (schema-checked), recorded
   next to the code's verdict.
With ``screen_epochs`` the Act step screens candidates at a few epochs and promotes the best from
its checkpoint (`screen`: per round, or early when it matches the incumbent; costly screens stop).
6. Remember (`remember`): hypothesis, diagnostics, reflection and flags as trial user attrs; long-term insight
   operations (code-derived and validated LLM ones) in the memory bank; at the end of the study
   (the loop's end-of-study hook, `VirtualMLEAgent.end`) a cognition summary distilled into the bank.

With a weak LLM (the embedded SmolLM2-135M picks the first option it sees), the mechanisms in code
carry the decisions and the LLM can only choose among candidates the surrogate cannot tell apart;
with a strong model behind ``--llm``, widen ``shortlist`` / ``pick_margin`` to give it more say.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from virtualmle.agent import prompts
from virtualmle.agent.act import (
    ActSettings,
    Choice,
    act_hybrid,
    act_llm,
    code_hypothesis,
    kind_of,
    pool_counts,
)
from virtualmle.agent.act import validate_change as _validate_change
from virtualmle.agent.candidates import Candidate, generate_candidates
from virtualmle.agent.config import AgentConfig
from virtualmle.agent.diagnostics import Observation, best_of, diagnose
from virtualmle.agent.fallback_notice import FallbackNotice
from virtualmle.agent.flat import flat_params, repeats, without_flat
from virtualmle.agent.global_candidates import global_candidates, random_candidate, tpe_candidates
from virtualmle.agent.training_length import rerun_check
from virtualmle.agent.llm_call import LLMCaller
from virtualmle.agent.plan import (
    Transfer,
    eval_users,
    insight_hints,
    last_diagnostics,
    load_transfer,
    observation,
    observations,
    planning_context,
    study_memory,
)
from virtualmle.agent.reflect import reflect
from virtualmle.agent.remember import base_rejections, distil, remember, trial_evidence
from virtualmle.agent.screen import Decision, confirming, decide, is_screen, note_settled, screen_too_costly
from virtualmle.agent.space_view import SpaceView, space_view
from virtualmle.agent.surrogate import Surrogate, rank_candidates
from virtualmle.agent.watch import hopeless
from virtualmle.errors import ObserveIncomplete, VirtualMLEError
from virtualmle.records import (
    A_AGENT,
    A_CHANGED,
    A_CONTEXT,
    A_DIAGNOSTICS,
    A_HYPOTHESIS,
    A_PARENT,
    A_PROMOTED_FROM,
    A_PROMOTION,
    A_SCREEN,
    A_TEXT_REJECTIONS,
    A_TRANSFER,
    A_VERDICT,
    TrialRecord,
)
from virtualmle.search.method import FIDELITY_KEYS, Proposal, RunningTrial, SearchContext

logger = logging.getLogger(__name__)

MAX_CONTEXT_ATTR = 12_000  # characters of the planning context stored with a trial


class VirtualMLEAgent:
    """The agent as a search `Method` (registered as ``agent`` in `virtualmle.methods`).

    Args:
        space: the study's `virtualmle.search.space.SearchSpace`.
        seed: the study seed (candidate order, tie-breaking).
        llm: an `LLMClient`, `LLMOptions`, an `LLMCaller`, an ``--llm`` spec string, or None
            (``$VIRTUALMLE_LLM`` or the embedded model); a client is built on the first call, in
            the study's run directory.
        max_llm_tokens: token budget when the client is built here from a spec (or None).
        config: an `AgentConfig`; keyword options override its fields.
    """

    name = "agent"

    def __init__(self, *, space: Any, seed: int = 0, llm: Any = None, max_llm_tokens: int | None = None,
                 config: AgentConfig | None = None, **options: Any) -> None:
        self.space = space
        self.seed = seed
        cfg = config or AgentConfig()
        for key, value in options.items():
            if hasattr(cfg, key) and value is not None:
                setattr(cfg, key, value)
        cfg.check()
        self.cfg = cfg
        self.view: SpaceView = space_view(space)
        # The loop's optional watch hook, offered only when asked for: without it the loop does
        # not stream a trial's epochs back for judging (`search.method.Method`).
        watching = cfg.stop_hopeless or (cfg.screen_epochs > 0 and (cfg.screen_cost_factor > 0 or cfg.screen_repeat > 0))
        self.watch = self._watch if watching else None
        self.llm = LLMCaller.of(llm, max_tokens_budget=max_llm_tokens, retries=cfg.unavailable_retries)
        self._observed: dict[int, dict[str, Any]] = {}  # attrs returned by observe this session
        self._transfer: Transfer | None = None
        self._bank: Any = None
        self._finished = False
        self._console: Any = None
        self.timings: list[dict[str, float]] = []
        self._fallbacks = FallbackNotice()  # issue 15: each fallback said once per study
        self._screens_issued: dict[int, int] = {}  # screens proposed per round by this process
        self._promoting: dict[int, bool] = {}  # screens whose promotion this process proposed: early?

    # ---- resources -------------------------------------------------------------------------
    def bank(self) -> Any:
        """The memory bank, or None with ``memory=False``."""
        if not self.cfg.memory:
            return None
        if self._bank is None:
            from virtualmle.memory import MemoryBank

            self._bank = MemoryBank(self.cfg.memory_dir)
        return self._bank

    def _print(self, text: str) -> None:
        if not self.cfg.display:
            return
        if self._console is None:
            from rich.console import Console

            self._console = Console(highlight=False)
        self._console.print(text, markup=False)

    def _compact(self) -> bool:
        """Send the compact context (small local models), or the full one."""
        if self.cfg.context != "auto":
            return self.cfg.context == "compact"
        return self.llm.local

    # ---- short-term memory from the context ---------------------------------------------------
    def _attrs(self, rec: TrialRecord) -> dict[str, Any]:
        return {**rec.user_attrs, **self._observed.get(rec.number, {})}

    def observations(self, ctx: SearchContext, records: list[TrialRecord] | None = None) -> list[Observation]:
        """The study's trials as `Observation`s, with each one's parent and changed parameters."""
        return observations(self.view, ctx, list(ctx.history if records is None else records), self._attrs)

    def transfer(self, ctx: SearchContext) -> Transfer:
        """What transfer brought in (loaded once per study)."""
        if self._transfer is None:
            self._transfer = load_transfer(self.bank(), ctx, self.cfg.transfer, self.cfg.transfer_k,
                                           parts=self.cfg.transfer_parts)
        return self._transfer

    # ---- watch a running trial ------------------------------------------------------------------
    def _watch(self, ctx: SearchContext, trial: RunningTrial) -> str | None:
        """The loop's `watch` hook: stop a screen that repeats a finished trial's flat curve
        (``screen_repeat``, `agent/flat.py` `repeats`), one that costs too much and is not `ahead`
        (``screen_cost_factor``), or a trial whose curve cannot reach the incumbent (``stop_hopeless``)."""
        inc = ctx.incumbent
        if trial.screen and self.cfg.screen_epochs > 0 and self.cfg.screen_repeat > 0:
            reason = repeats(trial, ctx.history, ctx.metric, points=self.cfg.screen_repeat)
            if reason:
                return reason
        if trial.screen and self.cfg.screen_epochs > 0 and self.cfg.screen_cost_factor > 0:
            screens = [r for r in ctx.history if is_screen(self._attrs(r))]
            reason = screen_too_costly(trial, screens, inc, ctx.metric, factor=self.cfg.screen_cost_factor,
                                       floor=self.cfg.screen_cost_share * (ctx.time_budget or 0.0))
            if reason:
                return reason
        if not self.cfg.stop_hopeless or not trial.curve or inc is None or inc.value is None:
            return None
        horizon = int(trial.params.get("max_epochs") or len(inc.epochs) or len(trial.curve))
        return hopeless(list(trial.curve), inc.curve(ctx.metric), float(inc.value), horizon=horizon,
                        metric=ctx.metric)

    # ---- plan + act --------------------------------------------------------------------------
    def propose(self, ctx: SearchContext) -> Proposal | None:
        """Plan and act: the next configuration with its hypothesis (see the module docstring)."""
        t0 = time.perf_counter()
        obs = self.observations(ctx)
        defaults = self.space.defaults()
        pending_keys = {self.view.key(p) for p in ctx.pending}
        # The default first; again after a resume that lost it (finished screens are no reference).
        if all(is_screen(o.attrs) for o in obs) and self.view.key(defaults) not in pending_keys:
            hyp = {"text": "baseline: the backbone's default configuration, run first as the reference",
                   "changes": {}, "mechanism": "", "risk": "", "source": "code"}
            self._print("  plan: trial 1 is the default configuration")
            return Proposal(params=dict(defaults), user_attrs={
                A_HYPOTHESIS: hyp, A_PARENT: None, A_CHANGED: [],
                A_AGENT: {"mode": self.cfg.mode, "source": "default", "fallback": None}})
        decision = self._screening(ctx)
        if decision is not None and decision.promote is not None:
            return self._promotion(decision, ctx.metric)
        tried = {self.view.key(o.params) for o in obs} | pending_keys
        screened, obs = obs, [o for o in obs if not is_screen(o.attrs)]  # partial curves: never fitted
        rng = np.random.default_rng([self.seed, len(obs), len(ctx.pending)])
        incumbent = best_of(obs) or Observation(number=-1, params={n: defaults[n] for n in self.view.axes},
                                                value=None)
        last = last_diagnostics(obs, eval_users(ctx))
        transfer = self.transfer(ctx)
        mem_hints, insights_text = insight_hints(self.bank(), ctx)
        cset = generate_candidates(self.view, incumbent, obs, last=last, hints=transfer.hints + mem_hints,
                                   pending=ctx.pending, plateau_k=self.cfg.plateau_k,
                                   max_changes=self.cfg.max_changes)
        # Screens are left out of `obs` (partial curves), not out of what was tried.
        cset.candidates = [c for c in cset.candidates if self.view.key(c.config) not in tried]
        if self.cfg.mode == "hybrid":
            # Global candidates next to the local moves: the surrogate's acquisition decides
            # whether the incumbent's neighbourhood or an unexplored region is the better bet.
            taken = tried | {self.view.key(c.config) for c in cset.candidates}
            cset.candidates += tpe_candidates(self.view, self.space, ctx.history, incumbent, taken,
                                              int(rng.integers(1 << 30)), self.cfg.tpe)
            cset.candidates += global_candidates(self.view, incumbent, taken, int(rng.integers(1 << 30)),
                                                 self.cfg.explore)
        # A longer cap on a run that stopped early (or more patience on one that never did) would
        # train the incumbent's run again, epoch for epoch: a whole trial that measures nothing.
        reruns = rerun_check(incumbent, running=not obs and self.view.key(defaults) in pending_keys,
                             fixed=self.space.fixed)
        cset.candidates = [c for c in cset.candidates if not reruns(c)]
        cset.flat = flat_params(incumbent, screened)  # screens count: a curve is a curve
        cset.candidates = without_flat(cset.candidates, cset.flat)
        surrogate = Surrogate(self.view, ard=self.cfg.ard).fit([o.params for o in obs], [o.value for o in obs],
                                                                prior=transfer.prior)
        ranked = rank_candidates(cset.candidates, surrogate, kappa=self.cfg.kappa, rng=rng,
                                 acquisition=self.cfg.acquisition, prior_scale=self.cfg.prior_scale)
        memory = study_memory(self.view, ctx, list(ctx.history), self._attrs)
        context, compact = planning_context(self.view, ctx, memory, obs, incumbent, last, cset, insights_text,
                                            transfer, self.cfg.plateau_k)
        t_plan = time.perf_counter() - t0
        step: dict[str, Any] = {"mode": self.cfg.mode, "plateau": cset.plateau, "stale": cset.stale_params,
                                "flat": cset.flat,
                                "n_candidates": len(ranked), "fallback": None,
                                "injection_flags": ["dataset name"] if prompts.looks_like_instruction(ctx.dataset) else []}
        choice = self._act(ctx, compact if self._compact() else context, incumbent, tried, ranked, rng)
        if choice is None:
            return None  # the space is exhausted
        if choice.candidate.source == "llm" and ranked and reruns(choice.candidate):
            # The LLM's own change would train the incumbent's run again: the surrogate's pick instead.
            choice = Choice(ranked[0], code_hypothesis(ranked[0]), {
                **choice.info, "fallback": "the LLM's change of training length alone would repeat the incumbent's run"})
        chosen, hyp = choice.candidate, choice.hypothesis
        step["injection_flags"] += choice.info.pop("injection_flags", [])
        step.update(choice.info)
        step.update(source=chosen.source, sources=chosen.sources or [chosen.source], reason=chosen.reason,
                    kind=kind_of(chosen), pool=pool_counts(ranked),
                    score=None if chosen.score is None else round(chosen.score, 4),
                    seconds={"plan": round(t_plan, 4), "llm": round(choice.llm_seconds, 4),
                             "total": round(time.perf_counter() - t0, 4)})
        self._fallbacks.note(step, ctx.history, ctx.study_name)  # issue 15: said once per study
        self._print(f"  hypothesis: {chosen.describe()} | {hyp['text'][:140]}")
        attrs = {
            A_HYPOTHESIS: hyp,
            A_PARENT: incumbent.number if incumbent.number >= 0 else None,
            A_CHANGED: sorted(chosen.changed),
            A_AGENT: step,
            A_CONTEXT: context[:MAX_CONTEXT_ATTR],
        }
        if transfer.lines:
            attrs[A_TRANSFER] = transfer.lines[:12]
        params = {**defaults, **chosen.config}
        fidelity = self._screen_mark(decision, attrs, step)
        return Proposal(params=params, user_attrs=attrs, fidelity=fidelity)

    # ---- screen, then promote (agent/screen.py) ----------------------------------------------------
    def _screening(self, ctx: SearchContext) -> Decision | None:
        if self.cfg.screen_epochs <= 0:
            return None
        return decide(list(ctx.history), ctx.incumbent, self._screens_issued, width=self.cfg.screen_width,
                      epochs=self.cfg.screen_epochs, metric=ctx.metric, tolerance=self.cfg.screen_tolerance,
                      promoting={n for n, e in self._promoting.items() if not e},
                      early={n for n, e in self._promoting.items() if e})

    def _promotion(self, decision: Decision, metric: str) -> Proposal:
        """Continue the round's best screen from its checkpoint, as the trial it was proposed as
        (with less patience where more epochs would only confirm its curve: `confirming`)."""
        src = decision.promote
        assert src is not None
        a = self._attrs(src)
        patience = {**self.space.fixed, **src.params}.get("patience")
        confirm = (confirming(src, metric, patience=patience, flat_patience=self.cfg.confirm_patience)
                   if self.cfg.confirm_patience > 0 else None)
        reason = decision.reason + (f"; {confirm[1]}" if confirm is not None else "")
        step = {"mode": self.cfg.mode, "source": "promotion", "reason": reason, "fallback": None,
                "kind": "promotion", "early": decision.early}
        attrs: dict[str, Any] = {A_HYPOTHESIS: a.get(A_HYPOTHESIS), A_PARENT: a.get(A_PARENT),
                                 A_CHANGED: a.get(A_CHANGED) or [], A_PROMOTED_FROM: src.number,
                                 A_PROMOTION: reason, A_AGENT: step}
        note_settled(decision, attrs, step)
        self._promoting[src.number] = decision.early
        self._print(f"  plan: {reason}")
        return Proposal(params=dict(src.params), user_attrs=attrs, resume_from=src.number,
                        fidelity=confirm[0] if confirm is not None else {})

    def _screen_mark(self, decision: Decision | None, attrs: dict[str, Any],
                     step: dict[str, Any]) -> dict[str, Any]:
        """Make the proposal a screen of the open round (its fidelity), unless it cannot be one."""
        if decision is None:
            return {}
        note_settled(decision, attrs, step)
        if decision.screen_round is None:
            return {}
        if set(attrs.get(A_CHANGED) or ()) <= FIDELITY_KEYS:
            return {}  # only the training length changed: its first epochs are the parent's, nothing to screen
        rnd = decision.screen_round
        self._screens_issued[rnd] = self._screens_issued.get(rnd, 0) + 1
        attrs[A_SCREEN] = {"round": rnd, "epochs": self.cfg.screen_epochs}
        return {"max_epochs": self.cfg.screen_epochs}

    def _act(self, ctx: SearchContext, context: str, incumbent: Observation, tried: set[str],
             ranked: list[Candidate], rng: np.random.Generator) -> Choice | None:
        """The Act step: an LLM pick or proposal, or a random configuration when no candidate is
        left near the incumbent (None when the whole space is used)."""
        if not ranked:
            cand = random_candidate(self.view, incumbent, tried, int(rng.integers(1 << 30)))
            if cand is None:
                return None
            return Choice(cand, code_hypothesis(cand), {"fallback": "no candidate left near the incumbent"})
        settings = ActSettings(shortlist=self.cfg.shortlist, pick_margin=self.cfg.pick_margin,
                               acquisition=self.cfg.acquisition, max_changes=self.cfg.max_changes,
                               reasks=self.cfg.reasks, compact=self._compact(), seed=self.seed)
        if self.cfg.mode == "llm":
            return act_llm(self.llm, ctx, self.view, context, incumbent.params, tried, ranked, settings)
        return act_hybrid(self.llm, ctx, context, ranked, settings, rng)

    def validate_change(self, incumbent: dict[str, Any], changes: list[tuple[str, Any]],
                        tried: set[str]) -> Candidate:
        """Check an LLM-proposed change against the space (see `act.validate_change`)."""
        return _validate_change(self.view, incumbent, changes, tried, self.cfg.max_changes)

    # ---- observe + reflect + remember -------------------------------------------------------
    def observe(self, ctx: SearchContext, record: TrialRecord) -> dict[str, Any]:
        """Diagnose the finished trial, reflect on it, update memory; returns user attrs to store."""
        t0 = time.perf_counter()
        prior_records = [r for r in ctx.history if r.number != record.number]
        obs_before = self.observations(ctx, prior_records)
        o = observation(self.view, ctx, record, self._attrs(record), obs_before)
        diag = diagnose(o, obs_before, best_of(obs_before), eval_users=eval_users(ctx))
        attrs: dict[str, Any] = {A_DIAGNOSTICS: diag.to_dict(), A_VERDICT: diag.code_verdict}
        llm_s = 0.0
        reflection = None
        memory = study_memory(self.view, ctx, prior_records + [record], self._attrs)
        ev, pair = trial_evidence(memory, o, diag)
        if self.cfg.reflection and o.base is not None and not is_screen(self._attrs(record)):
            t = time.perf_counter()
            _, insights_text = insight_hints(self.bank(), ctx)
            reflection = reflect(self.llm, ctx, self.view, number=record.number, hypothesis=o.attrs.get(A_HYPOTHESIS),
                                 diag=diag, memory=memory, insights_text=insights_text, compact=self._compact(),
                                 seed=self.seed * 1000 + record.number, attrs=attrs,
                                 evidence=ev.of(pair) if pair is not None else None)
            llm_s = time.perf_counter() - t
        t_mem = time.perf_counter()
        if self.cfg.memory:
            try:
                attrs["insight_ops"] = remember(self.bank(), ctx, self.view, o, diag, memory, reflection)
                attrs[A_TEXT_REJECTIONS] = attrs["insight_ops"].pop("text_rejections", 0)
            except (VirtualMLEError, OSError) as exc:  # memory trouble must not lose the trial's result
                logger.warning("memory update failed for trial %d: %s", record.number, exc)
                attrs["memory_error"] = str(exc)[:200]
        else:
            attrs[A_TEXT_REJECTIONS] = base_rejections(reflection, o.attrs.get(A_HYPOTHESIS))
        mem_s = time.perf_counter() - t_mem
        attrs["agent_seconds"] = {"reflect_llm": round(llm_s, 4), "memory": round(mem_s, 4),
                                  "observe_total": round(time.perf_counter() - t0, 4)}
        self._observed[record.number] = attrs
        self.timings.append({"trial": record.number, "observe": time.perf_counter() - t0,
                             "train": float(record.seconds or 0.0)})
        if "memory_error" in attrs:  # issue 15: a memory that cannot be written stops the study
            raise ObserveIncomplete(f"memory bank: cannot record trial {record.number}: {attrs['memory_error']}", attrs)
        verdict = diag.code_verdict + (f" (llm: {reflection['verdict']})" if reflection else "")
        self._print(f"  verdict: {verdict} | {diag.summary()[:160]}")
        return attrs

    def end(self, ctx: SearchContext) -> Path | None:
        """The loop's end-of-study hook: distil the study into a cognition summary in the bank
        (once per agent; a no-op with memory off or no trial)."""
        if self._finished or not self.cfg.memory or not ctx.history:
            return None
        path, n_rules = distil(self.bank(), ctx, study_memory(self.view, ctx, list(ctx.history), self._attrs))
        self._finished = True
        self._print(f"  memory: cognition summary with {n_rules} rule(s) -> {path}")
        return path
