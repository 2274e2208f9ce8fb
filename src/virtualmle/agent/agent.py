"""The VirtualMLE agent: plan, act, observe, reflect, remember; one step per trial.

The agent is a `virtualmle.search.method.Method`, so it runs through the same loop, executor and
Optuna storage as grid / random / TPE / OPRO. It keeps no state that storage does not have: every
call rebuilds the study's short-term memory from ``ctx.history`` (and the user attrs stored with
each trial), so a resumed study continues exactly where it stopped.

One step:

1. Trial 1 is the backbone's default configuration.
2. Plan: a context from memory (profile, incumbent, trials table, coverage, diagnostics, open
   hypotheses, insights, transferred rules; LLM text quoted as data).
3. Act: candidates generated in code (`candidates.generate_candidates`: 1-2 parameter moves of
   the incumbent) plus, in hybrid mode, global ones (a Latin-hypercube sample of the space and an
   independent Optuna TPE sampler's suggestions), ranked by the expected improvement under a GP
   surrogate plus a small bonus for their prior evidence (`surrogate.rank_candidates`). ``hybrid`` mode shows the LLM the
   near-tied top few in a random order and it picks one (a label from an enum) with a hypothesis;
   ``llm`` mode lets it propose one change directly, which code validates, snaps and deduplicates,
   re-asking on a refusal. Any LLM failure falls back to the surrogate's top candidate, recorded.
4. Observe: diagnostics in code (`diagnostics.diagnose`); keep / discard by validation metric only.
5. Reflect: the LLM's verdict, attribution, rule and next direction (schema-checked), recorded
   next to the code's verdict.
6. Remember: hypothesis, diagnostics, reflection and flags as trial user attrs; long-term insight
   operations (code-derived and validated LLM ones) in the memory bank; at the end of the study a
   cognition summary distilled into the bank.

With a weak LLM (the embedded SmolLM2-135M picks the first option it sees), the mechanisms in code
carry the decisions and the LLM can only choose among candidates the surrogate cannot tell apart;
with a strong model behind ``--llm``, widen ``shortlist`` / ``pick_margin`` to give it more say.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError

from virtualmle.agent import prompts
from virtualmle.agent.candidates import (
    Candidate,
    ProposalRejected,
    RuleHint,
    SpaceView,
    generate_candidates,
    random_config,
    space_view,
)
from virtualmle.agent.diagnostics import Diagnostics, Observation, best_of, diagnose
from virtualmle.agent.schemas import candidate_labels, change_schema, pick_schema, reflection_schema
from virtualmle.agent.surrogate import PriorTrial, Surrogate, rank_candidates
from virtualmle.errors import LLMBudgetExceeded, LLMOutputError, LLMUnavailableError, VirtualMLEError
from virtualmle.search.method import Outcome, Proposal, SearchContext, TrialRecord

logger = logging.getLogger(__name__)

Mode = Literal["hybrid", "llm"]

# Trial user-attr keys (the memory package reads hypothesis / reflection / diagnostics /
# changed / parent back when it rebuilds a study's short-term memory).
A_HYPOTHESIS = "hypothesis"
A_REFLECTION = "reflection"
A_DIAGNOSTICS = "diagnostics"
A_CHANGED = "changed"
A_PARENT = "parent"
A_VERDICT = "verdict"
A_AGENT = "agent"  # per-step record: mode, source, pick, fallback, refusals, seconds
A_CONTEXT = "planning_context"
A_TRANSFER = "transfer_rules"

MAX_CONTEXT_ATTR = 12_000  # characters of the planning context stored with a trial
UNAVAILABLE_RETRY_S = 2.0


@dataclass
class AgentConfig:
    """Switches of the agent (the CLI's flags and the ablations).

    Attributes:
        mode: ``hybrid`` (code candidates, surrogate-ranked, LLM picks among near-ties) or
            ``llm`` (the LLM proposes the change itself; validated and re-asked).
        reflection: run the Reflect step (``--no-reflection`` turns it off).
        memory: read and write long-term memory and distil a summary (``--no-memory``).
        memory_dir: the bank directory (default ``~/.virtualmle/memory``).
        transfer: ``auto``, ``none`` or dataset names to take cognition summaries from.
        transfer_k: summaries retrieved by ``auto``.
        plateau_k: trials on the same parameters without improvement before a change must
            touch another parameter.
        max_changes: parameters one proposal may change.
        shortlist: at most this many candidates are shown to the LLM in hybrid mode.
        pick_margin: only candidates scoring within this margin of the best are shown, so a
            position-biased model cannot pick a clearly worse one (standardised units with
            ``ucb``; a fraction of the best score with ``ei``).
        kappa: exploration weight of the surrogate's uncertainty (``ucb`` only).
        reasks: pure-LLM mode: re-asks after a refused proposal before falling back.
        unavailable_retries: a step is retried this often when the backend is unreachable.
        context: what the LLM is sent: ``full`` (the whole planning context), ``compact``
            (profile, incumbent, diagnostics, plateau, rules: a fraction of the tokens) or
            ``auto`` (compact for local models, which process prompts slowly on CPUs; full for
            HTTP endpoints). The full context is stored with every trial either way.
        explore: this many configurations drawn from the whole space (a Latin-hypercube sample
            over the axes' values) join the local candidates in hybrid mode on every step, so
            the surrogate's acquisition can leave the incumbent's neighbourhood.
        tpe: this many suggestions of an independent Optuna TPE sampler, fed the study's
            history, join the candidates in hybrid mode (0 turns it off).
        acquisition: ``ei`` (expected improvement, default) or ``ucb`` (``mu + kappa * sigma``).
        prior_scale: weight of the candidates' prior evidence (diagnostics, momentum, rules) next
            to the acquisition value.
        ard: fit a surrogate length scale per parameter (automatic relevance determination), so
            parameters whose changes did not matter stop attracting trials.
        display: print the hypothesis and verdict of each trial (the CLI's progress display).
    """

    mode: Mode = "hybrid"
    reflection: bool = True
    memory: bool = True
    memory_dir: Path | None = None
    transfer: str = "auto"
    transfer_k: int = 2
    plateau_k: int = 3
    max_changes: int = 2
    shortlist: int = 4
    pick_margin: float = 0.15
    kappa: float = 0.5
    reasks: int = 2
    unavailable_retries: int = 1
    context: Literal["auto", "compact", "full"] = "auto"
    explore: int = 256
    tpe: int = 2
    acquisition: Literal["ei", "ucb"] = "ei"
    prior_scale: float = 0.1
    ard: bool = True
    display: bool = False


@dataclass
class _Transfer:
    """What transfer brought in (loaded once per study)."""

    sources: list[str] = field(default_factory=list)
    hints: list[RuleHint] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    prior: list[PriorTrial] = field(default_factory=list)


class VirtualMLEAgent:
    """The agent as a search `Method` (registered as ``agent``).

    Args:
        space: the study's `virtualmle.search.space.SearchSpace`.
        seed: the study seed (candidate order, tie-breaking).
        llm: an `LLMClient`, or an ``--llm`` spec string (built lazily in the run directory),
            or None for the embedded default.
        max_llm_tokens: token budget when the client is built here.
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
        if cfg.mode not in ("hybrid", "llm"):
            from virtualmle.errors import ConfigError

            raise ConfigError(f"--mode {cfg.mode!r} is not allowed: use hybrid or llm")
        self.cfg = cfg
        self.view: SpaceView = space_view(space)
        self._llm = llm if llm is not None and not isinstance(llm, str) else None
        self._llm_spec = llm if isinstance(llm, str) else None
        self._max_tokens = max_llm_tokens
        self._observed: dict[int, dict[str, Any]] = {}  # attrs returned by observe this session
        self._transfer: _Transfer | None = None
        self._bank: Any = None
        self._finished = False
        self._console: Any = None
        self.timings: list[dict[str, float]] = []
        self._eval_users: int | None = None
        from virtualmle.agent.fallback_notice import FallbackNotice
        self._fallbacks = FallbackNotice()

    # ---- resources -------------------------------------------------------------------------
    def llm(self, ctx: SearchContext) -> Any:
        """The LLM client (built on first use, logging into the study's run directory)."""
        if self._llm is None:
            from virtualmle.llm import make_llm

            spec = self._llm_spec or os.environ.get("VIRTUALMLE_LLM") or None
            self._llm = make_llm(spec, run_dir=ctx.run_dir, max_tokens_budget=self._max_tokens)
        bind = getattr(self._llm, "bind", None)
        if bind is not None:  # a lazy client (the tune CLI's) learns the run directory here
            bind(ctx.run_dir)
        return self._llm

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

    # ---- short-term memory from the context ---------------------------------------------------
    def _attrs(self, rec: TrialRecord) -> dict[str, Any]:
        return {**rec.user_attrs, **self._observed.get(rec.number, {})}

    def observations(self, ctx: SearchContext, records: list[TrialRecord] | None = None) -> list[Observation]:
        """The study's trials as `Observation`s, with each one's parent and changed parameters."""
        out: list[Observation] = []
        for rec in records if records is not None else ctx.history:
            out.append(self._observation(ctx, rec, out))
        return out

    def _observation(self, ctx: SearchContext, rec: TrialRecord, before: list[Observation]) -> Observation:
        attrs = self._attrs(rec)
        curve: list[float] = []
        for e in rec.epochs:
            v = (e.get("valid") or {}).get(ctx.metric) if isinstance(e, dict) else None
            if isinstance(v, (int, float)) and math.isfinite(v):
                curve.append(float(v))
        ok = rec.outcome is Outcome.COMPLETE and rec.value is not None and math.isfinite(rec.value)
        params = {n: rec.params.get(n) for n in self.view.axes if n in rec.params}
        parent = attrs.get(A_PARENT)
        base_obs = next((o for o in before if o.number == parent), None) if isinstance(parent, int) else None
        if base_obs is None and not isinstance(parent, int):
            base_obs = best_of(before)
        changed = attrs.get(A_CHANGED)
        if not (isinstance(changed, list) and all(isinstance(c, str) for c in changed)):
            changed = ([k for k in self.view.axes if params.get(k) != base_obs.params.get(k)]
                       if base_obs is not None else [])
        error = None if ok else _failure_class(rec)
        return Observation(
            number=rec.number, params=params, value=float(rec.value) if ok else None,
            state="complete" if ok else rec.outcome.value, curve=curve, seconds=rec.seconds or None,
            num_params=rec.num_params, stopped="pruned" if rec.outcome is Outcome.PRUNED else None,
            error=error, base=base_obs.number if base_obs is not None else (parent if isinstance(parent, int) else None),
            changed=list(changed), attrs=attrs,
        )

    def _memory(self, ctx: SearchContext, records: list[TrialRecord] | None = None) -> Any:
        from virtualmle.memory import StudyMemory

        recs = records if records is not None else ctx.history
        view = [{"number": r.number, "params": {n: r.params.get(n) for n in self.view.axes if n in r.params},
                 "value": r.value if r.outcome is Outcome.COMPLETE else None, "outcome": r.outcome,
                 "user_attrs": self._attrs(r)} for r in recs]
        return StudyMemory.from_records(view, metric=ctx.metric, study=ctx.study_name,
                                        dataset=ctx.dataset, model=ctx.model)

    # ---- transfer and long-term memory -----------------------------------------------------
    def transfer(self, ctx: SearchContext) -> _Transfer:
        """Summaries of similar datasets (or the named ones) as hints, prompt lines and prior trials."""
        if self._transfer is not None:
            return self._transfer
        t = _Transfer()
        bank = self.bank()
        spec = (self.cfg.transfer or "none").strip()
        if bank is not None and spec.lower() != "none":
            if spec.lower() == "auto":
                summaries = bank.similar(ctx.profile, ctx.model, k=self.cfg.transfer_k, exclude=[ctx.dataset])
            else:
                names = [n.strip() for n in spec.split(",") if n.strip()]
                summaries = bank.get_summaries(names, ctx.model)
            for s in summaries:
                t.sources.append(s.dataset)
                for r in s.applicable_rules(ctx.profile, ctx.model):
                    a = r.rule.action
                    t.hints.append(RuleHint(param=a.param, direction=a.direction, value=a.value, avoid=a.avoid,
                                            confidence=r.confidence, source="transfer", text=r.text))
                    t.lines.append(f"from {s.dataset}: {r.rule.describe()} (confidence {r.confidence:.2f}, "
                                   f"evidence {r.evidence}): {r.text}")
                if s.start_config:
                    t.lines.append(f"from {s.dataset}: best configuration there changed "
                                   + ", ".join(f"{k}={v}" for k, v in list(s.start_config.items())[:6]))
                for pt in s.trials:
                    t.prior.append(PriorTrial(params=dict(pt.params), value=float(pt.value), study=s.study or s.dataset))
        self._transfer = t
        return t

    def _insight_hints(self, ctx: SearchContext) -> tuple[list[RuleHint], str]:
        bank = self.bank()
        if bank is None:
            return [], ""
        iset = bank.insights(ctx.dataset, ctx.model)
        hints = []
        for ins in iset.relevant(ctx.profile, ctx.model, k=12):
            if ins.rule is None:
                continue
            # This study's own trials already inform the surrogate; only knowledge from earlier
            # studies of the dataset counts as independent evidence for a candidate.
            refs = list(ins.supporting) + list(ins.contradicting)
            if refs and all(r.study == ctx.study_name for r in refs):
                continue
            a = ins.rule.action
            hints.append(RuleHint(param=a.param, direction=a.direction, value=a.value, avoid=a.avoid,
                                  confidence=ins.confidence, source="memory", text=ins.text))
        return hints, iset.render_for_prompt(k=8, profile=ctx.profile) if iset.insights else ""

    # ---- plan + act --------------------------------------------------------------------------
    def propose(self, ctx: SearchContext) -> Proposal | None:
        """Plan and act: the next configuration with its hypothesis (see the module docstring)."""
        t0 = time.perf_counter()
        obs = self.observations(ctx)
        defaults = self.space.defaults()
        pending_keys = {self.view.key(p) for p in ctx.pending}
        if not obs and self.view.key(defaults) not in pending_keys:
            hyp = {"text": "baseline: the backbone's default configuration, run first as the reference",
                   "changes": {}, "mechanism": "", "risk": "", "source": "code"}
            self._print("  plan: trial 1 is the default configuration")
            return Proposal(params=dict(defaults), user_attrs={
                A_HYPOTHESIS: hyp, A_PARENT: None, A_CHANGED: [],
                A_AGENT: {"mode": self.cfg.mode, "source": "default", "fallback": None}})
        rng = np.random.default_rng([self.seed, len(obs), len(ctx.pending)])
        incumbent = best_of(obs) or Observation(number=-1, params={n: defaults[n] for n in self.view.axes},
                                                value=None)
        self._eval_users = _eval_users(ctx)
        last = self._last_diagnostics(obs)
        transfer = self.transfer(ctx)
        mem_hints, insights_text = self._insight_hints(ctx)
        cset = generate_candidates(self.view, incumbent, obs, last=last, hints=transfer.hints + mem_hints,
                                   pending=ctx.pending, plateau_k=self.cfg.plateau_k,
                                   max_changes=self.cfg.max_changes)
        if self.cfg.mode == "hybrid":
            # Global candidates next to the local moves: the surrogate's acquisition decides
            # whether the incumbent's neighbourhood or an unexplored region is the better bet.
            tried = {self.view.key(o.params) for o in obs} | pending_keys
            tried |= {self.view.key(c.config) for c in cset.candidates}
            cset.candidates += self._tpe_candidates(ctx, incumbent, tried, int(rng.integers(1 << 30)))
            cset.candidates += self._global_candidates(incumbent, tried, int(rng.integers(1 << 30)))
        surrogate = Surrogate(self.view, ard=self.cfg.ard).fit([o.params for o in obs], [o.value for o in obs], prior=transfer.prior)
        ranked = rank_candidates(cset.candidates, surrogate, kappa=self.cfg.kappa, rng=rng,
                                 acquisition=self.cfg.acquisition, prior_scale=self.cfg.prior_scale)
        memory = self._memory(ctx)
        context, compact = self._context(ctx, memory, incumbent, last, cset, insights_text, transfer)
        prompt_context = compact if self._compact(ctx) else context
        t_plan = time.perf_counter() - t0
        step: dict[str, Any] = {"mode": self.cfg.mode, "plateau": cset.plateau, "stale": cset.stale_params,
                                "n_candidates": len(ranked), "fallback": None, "injection_flags": []}
        if prompts.looks_like_instruction(ctx.dataset):
            step["injection_flags"].append("dataset name")
        if not ranked:
            tried = {self.view.key(o.params) for o in obs} | pending_keys
            cfg = random_config(self.view, random.Random(int(rng.integers(1 << 30))), tried)
            if cfg is None:
                return None  # the space is exhausted
            step.update(source="random", fallback="no candidate left near the incumbent")
            chosen = Candidate(cfg, {k: [incumbent.params.get(k), v] for k, v in cfg.items()
                                     if v != incumbent.params.get(k)}, "random", "space exhausted locally")
            hyp = _code_hypothesis(chosen)
        elif self.cfg.mode == "llm":
            chosen, hyp = self._act_llm(ctx, prompt_context, incumbent, obs, ranked, step)
        else:
            chosen, hyp = self._act_hybrid(ctx, prompt_context, ranked, step, rng)
        llm_s = step.pop("_llm_s", 0.0)
        step.update(source=chosen.source, sources=chosen.sources or [chosen.source], reason=chosen.reason,
                    kind=_kind_of(chosen), pool=_pool_counts(ranked),
                    score=None if chosen.score is None else round(chosen.score, 4),
                    seconds={"plan": round(t_plan, 4), "llm": round(llm_s, 4),
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
        return Proposal(params={**defaults, **chosen.config}, user_attrs=attrs)

    def _global_candidates(self, incumbent: Observation, tried: set[str], seed: int) -> list[Candidate]:
        """`explore` configurations spread over the whole space: a Latin-hypercube sample
        (every axis's values used about equally often, independently permuted per axis), with
        illegal and already-tried points dropped."""
        n = self.cfg.explore
        if n <= 0:
            return []
        draw = random.Random(seed)
        columns: dict[str, list[Any]] = {}
        for name, axis in self.view.axes.items():
            vals = list(axis.values)
            col = [vals[(i * len(vals)) // n] for i in range(n)] if n >= len(vals) else draw.sample(vals, n)
            draw.shuffle(col)
            columns[name] = col
        out: list[Candidate] = []
        for i in range(n):
            cfg = {name: col[i] for name, col in columns.items()}
            if self.view.violation(cfg) is not None or self.view.key(cfg) in tried:
                continue
            tried.add(self.view.key(cfg))
            out.append(self._whole_config(cfg, incumbent, "global", "a Latin-hypercube draw from the whole space"))
        return out

    def _tpe_candidates(self, ctx: SearchContext, incumbent: Observation, tried: set[str],
                        seed: int) -> list[Candidate]:
        """Suggestions of an independent Optuna TPE sampler fed this study's history (in memory),
        snapped to the space's legal values; illegal and already-tried ones are dropped."""
        if self.cfg.tpe <= 0:
            return []
        import warnings

        import optuna

        dists = self.space.distributions()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5)
            study = optuna.create_study(direction="maximize", sampler=sampler)
        for rec in ctx.history:
            params = {n: rec.params[n] for n in dists if n in rec.params}
            if len(params) != len(dists):
                continue
            ok = rec.outcome is Outcome.COMPLETE and rec.value is not None and math.isfinite(rec.value)
            try:
                study.add_trial(optuna.trial.create_trial(
                    params=params, distributions=dists, value=float(rec.value) if ok else None,
                    state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL))
            except (ValueError, TypeError):  # a value outside this space's distributions
                continue
        out: list[Candidate] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(self.cfg.tpe):
                trial = study.ask(dists)
                try:
                    cfg = self.view.snap_config(trial.params)
                except Exception:  # noqa: BLE001 - a suggestion the view cannot snap is just skipped
                    cfg = None
                study.tell(trial, state=optuna.trial.TrialState.FAIL)  # next ask gives another point
                if cfg is None or self.view.violation(cfg) is not None or self.view.key(cfg) in tried:
                    continue
                tried.add(self.view.key(cfg))
                out.append(self._whole_config(cfg, incumbent, "tpe", "Optuna TPE's suggestion for this study"))
        return out

    def _whole_config(self, cfg: dict[str, Any], incumbent: Observation, source: str, reason: str) -> Candidate:
        return Candidate(cfg, {k: [incumbent.params.get(k), v] for k, v in cfg.items()
                               if v != incumbent.params.get(k)}, source, reason, 0.0, [source])

    def _last_diagnostics(self, obs: list[Observation]) -> Diagnostics | None:
        if not obs:
            return None
        last = obs[-1]
        before = obs[:-1]
        return diagnose(last, before, best_of(before), eval_users=self._eval_users)

    def _compact(self, ctx: SearchContext) -> bool:
        if self.cfg.context != "auto":
            return self.cfg.context == "compact"
        spec = getattr(self._llm, "spec", None)
        if spec is None and self._llm is None:
            from virtualmle.llm import parse_spec

            spec = parse_spec(self._llm_spec or os.environ.get("VIRTUALMLE_LLM") or None)
        return bool(getattr(spec, "local", True))

    def _context(self, ctx: SearchContext, memory: Any, incumbent: Observation, last: Diagnostics | None,
                 cset: Any, insights_text: str, transfer: _Transfer) -> tuple[str, str]:
        """(full planning context, compact form for small local models)."""
        if incumbent.number >= 0 and incumbent.value is not None:
            inc = (f"trial {incumbent.number}: {ctx.metric} {incumbent.value:.6f}; configuration "
                   + ", ".join(f"{k}={_fmt(v)}" for k, v in incumbent.params.items()))
        else:
            inc = "none yet (no trial completed)"
        if cset.plateau:
            plateau = (f"PLATEAU: the last {self.cfg.plateau_k} trials changed only "
                       f"{', '.join(cset.stale_params)} without improving; the next change must touch "
                       "another parameter (uncovered first: " + (", ".join(cset.uncovered[:6]) or "none") + ")")
        else:
            plateau = "no plateau; parameters never varied: " + (", ".join(cset.uncovered[:8]) or "none")
        from virtualmle.agent.candidates import coverage as coverage_of

        obs = self.observations(ctx)
        changed_counts: dict[str, int] = {}
        for o in obs:
            for n in o.changed:
                changed_counts[n] = changed_counts.get(n, 0) + 1
        cov_text = prompts.render_coverage(coverage_of(obs, self.view), list(self.view.axes.values()), changed_counts)
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

    def _act_hybrid(self, ctx: SearchContext, context: str, ranked: list[Candidate], step: dict[str, Any],
                    rng: np.random.Generator) -> tuple[Candidate, dict[str, Any]]:
        """Show the near-tied top candidates in a random order; the LLM picks one."""
        top = ranked[0]
        # EI values shrink as the search converges: there a near tie is relative to the best EI
        # (within pick_margin of it), so a position-biased model gets no more say late than early.
        margin = self.cfg.pick_margin * (abs(top.score) if self.cfg.acquisition == "ei" else 1.0)  # type: ignore[arg-type]
        near = [c for c in ranked[: self.cfg.shortlist] if c.score >= top.score - margin]  # type: ignore[operator]
        step["surrogate_top"] = top.describe()
        step["near_ties"] = sum(1 for c in ranked[:4] if c.score >= top.score - margin)  # type: ignore[operator]
        if len(near) < 2:
            step["pick"] = {"shown": 1, "by": "surrogate (no near tie)"}
            return top, _code_hypothesis(top)
        order = list(rng.permutation(len(near)))
        shown = [near[i] for i in order]
        labels = candidate_labels(len(shown))
        if self._compact(ctx):  # prompt tokens are the CPU cost of a small local model: list briefly
            options = [(lab, f"{c.describe(max_changes=4)}  [why: {c.reason}]") for lab, c in zip(labels, shown)]
        else:
            options = [(lab, f"{c.describe()}  [why: {c.reason}; evidence: {', '.join(c.sources or [c.source])}]")
                       for lab, c in zip(labels, shown)]
        messages = prompts.pick_messages(context, options, model=ctx.model, metric=ctx.metric)
        t = time.perf_counter()
        try:
            reply = self._call(ctx, messages, pick_schema(len(shown), compact=self._compact(ctx)), purpose="pick",
                               seed=self.seed * 1000 + len(ctx.history))
        except LLMOutputError as exc:
            step["_llm_s"] = time.perf_counter() - t
            step["fallback"] = f"llm_output_error: {str(exc)[:160]}"
            step["pick"] = {"shown": len(shown), "by": "surrogate (LLM failed)"}
            return top, _code_hypothesis(top)
        step["_llm_s"] = time.perf_counter() - t
        i = labels.index(reply.choice)
        chosen = shown[i]
        step["pick"] = {"shown": len(shown), "by": "llm", "label": reply.choice, "position": i,
                        "surrogate_rank": ranked.index(chosen), "options": [c.describe() for c in shown]}
        hyp = {"text": reply.hypothesis, "mechanism": reply.mechanism, "risk": reply.risk,
               "changes": {k: v[1] for k, v in chosen.changed.items()}, "source": "llm"}
        for key in ("text", "mechanism", "risk"):
            if prompts.looks_like_instruction(hyp[key]):
                step["injection_flags"].append(f"llm hypothesis {key}")
        return chosen, hyp

    def _act_llm(self, ctx: SearchContext, context: str, incumbent: Observation, obs: list[Observation],
                 ranked: list[Candidate], step: dict[str, Any]) -> tuple[Candidate, dict[str, Any]]:
        """The LLM proposes ONE change; code validates, snaps, deduplicates and re-asks."""
        tried = {self.view.key(o.params) for o in obs} | {self.view.key(p) for p in ctx.pending}
        schema = change_schema(self.view.names, self.cfg.max_changes)
        refusals: list[dict[str, str]] = []
        error: str | None = None
        llm_s = 0.0
        for attempt in range(self.cfg.reasks + 1):
            messages = prompts.change_messages(context, incumbent.params, list(self.view.axes.values()),
                                               model=ctx.model, metric=ctx.metric,
                                               max_changes=self.cfg.max_changes, error=error)
            t = time.perf_counter()
            try:
                reply = self._call(ctx, messages, schema, purpose="propose",
                                   seed=self.seed * 1000 + len(ctx.history) * 10 + attempt,
                                   temperature=0.0 if attempt == 0 else 0.7)
            except LLMOutputError as exc:
                llm_s += time.perf_counter() - t
                refusals.append({"reason": "llm_output_error", "detail": str(exc)[:160]})
                break
            llm_s += time.perf_counter() - t
            try:
                cand = self.validate_change(incumbent.params, [(c.name, c.value) for c in reply.changes], tried)
            except ProposalRejected as exc:
                refusals.append({"reason": exc.reason, "detail": str(exc)[:160]})
                error = str(exc)
                continue
            step.update(refusals=refusals, _llm_s=llm_s)
            hyp = {"text": reply.hypothesis, "mechanism": reply.mechanism, "risk": reply.risk,
                   "changes": {k: v[1] for k, v in cand.changed.items()}, "source": "llm"}
            return cand, hyp
        top = ranked[0]
        step.update(refusals=refusals, _llm_s=llm_s,
                    fallback="llm proposals refused: " + ", ".join(r["reason"] for r in refusals))
        return top, _code_hypothesis(top)

    def validate_change(self, incumbent: dict[str, Any], changes: list[tuple[str, Any]],
                        tried: set[str]) -> Candidate:
        """Check an LLM-proposed change against the space; raise `ProposalRejected` with a reason.

        Refused: unknown parameters, garbage or out-of-range values, more than `max_changes`
        parameters, no change, constraint violations and configurations already tried (or running).
        """
        cfg, changed = self.view.apply_changes(incumbent, changes, max_changes=self.cfg.max_changes, tried=tried)
        return Candidate(cfg, changed, "llm", "proposed by the LLM", sources=["llm"])

    def _call(self, ctx: SearchContext, messages: list[dict], schema: Any, *, purpose: str, seed: int,
              temperature: float = 0.0, max_tokens: int = 320) -> Any:
        """One structured LLM call; an unreachable backend is retried, then stops the study."""
        attempts = max(0, self.cfg.unavailable_retries) + 1
        for i in range(attempts):
            try:
                return self.llm(ctx).structured(messages, schema, temperature=temperature, seed=seed,
                                                max_tokens=max_tokens, purpose=purpose)
            except LLMUnavailableError as exc:
                if i + 1 >= attempts:
                    raise LLMUnavailableError(
                        f"LLM backend unavailable during {purpose} (tried {attempts}x): {str(exc)[:200]}; "
                        "the study stopped cleanly, run the same command again to resume") from None
                logger.info("LLM unavailable during %s, retrying: %s", purpose, exc)
                time.sleep(UNAVAILABLE_RETRY_S)
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- observe + reflect + remember -------------------------------------------------------
    def observe(self, ctx: SearchContext, record: TrialRecord) -> dict[str, Any]:
        """Diagnose the finished trial, reflect on it, update memory; returns user attrs to store."""
        t0 = time.perf_counter()
        prior_records = [r for r in ctx.history if r.number != record.number]
        obs_before = self.observations(ctx, prior_records)
        o = self._observation(ctx, record, obs_before)
        incumbent = best_of(obs_before)
        diag = diagnose(o, obs_before, incumbent, eval_users=_eval_users(ctx))
        attrs: dict[str, Any] = {A_DIAGNOSTICS: diag.to_dict(), A_VERDICT: diag.code_verdict}
        llm_s = 0.0
        reflection = None
        if self.cfg.reflection and o.base is not None:
            t = time.perf_counter()
            reflection = self._reflect(ctx, record, o, diag, prior_records, attrs)
            llm_s = time.perf_counter() - t
        t_mem = time.perf_counter()
        if self.cfg.memory:
            try:
                attrs["insight_ops"] = self._remember(ctx, o, diag, obs_before, reflection)
            except (VirtualMLEError, OSError) as exc:  # memory trouble must not lose the trial's result
                logger.warning("memory update failed for trial %d: %s", record.number, exc)
                attrs["memory_error"] = str(exc)[:200]
        mem_s = time.perf_counter() - t_mem
        attrs["agent_seconds"] = {"reflect_llm": round(llm_s, 4), "memory": round(mem_s, 4),
                                  "observe_total": round(time.perf_counter() - t0, 4)}
        self._observed[record.number] = attrs
        self.timings.append({"trial": record.number, "observe": time.perf_counter() - t0,
                             "train": float(record.seconds or 0.0)})
        if "memory_error" in attrs:  # issue 15: a memory that cannot be written stops the study
            from virtualmle.errors import ObserveIncomplete
            raise ObserveIncomplete(f"memory bank: cannot record trial {record.number}: {attrs['memory_error']}", attrs)
        verdict = diag.code_verdict + (f" (llm: {reflection['verdict']})" if reflection else "")
        self._print(f"  verdict: {verdict} | {diag.summary()[:160]}")
        done = ctx.trials_used + (0 if any(r.number == record.number for r in ctx.history) else 1)
        own = self.view.key(record.params)
        others = [p for p in ctx.pending if self.view.key(p) != own]
        if done >= ctx.budget and not others:
            self.finish(ctx, extra=[record])
        return attrs

    def _reflect(self, ctx: SearchContext, record: TrialRecord, o: Observation, diag: Diagnostics,
                 prior_records: list[TrialRecord], attrs: dict[str, Any]) -> dict[str, Any] | None:
        from virtualmle.memory import Action, Reflection, Rule, regime_condition

        memory = self._memory(ctx, prior_records + [record])
        hyp = (o.attrs.get(A_HYPOTHESIS) or {})
        hyp_text = hyp.get("text", "") if isinstance(hyp, dict) else str(hyp)
        change = ", ".join(f"{k} {_fmt(a)} -> {_fmt(b)}" for k, (a, b) in diag.changed.items()) or "(none)"
        _, insights_text = self._insight_hints(ctx)
        if self._compact(ctx):  # small local model: the trial itself is what it reflects on
            context, insights_text = "", ""
        else:
            context = "## Trials so far (computed by code)\n" + memory.render_table(max_rows=8)
        messages = prompts.reflection_messages(context=context, change=change, hypothesis=hyp_text,
                                               diagnostics=diag.summary(), code_verdict=diag.code_verdict,
                                               insights=insights_text, model=ctx.model, metric=ctx.metric)
        try:
            reply = self._call(ctx, messages, reflection_schema(self.view.names, compact=self._compact(ctx)),
                               purpose="reflect",
                               seed=self.seed * 1000 + record.number)
        except LLMOutputError as exc:
            attrs["reflection_error"] = f"llm_output_error: {str(exc)[:160]}"
            return None
        except (LLMUnavailableError, LLMBudgetExceeded) as exc:
            # The trial's result is safe in storage; the next propose retries and stops cleanly.
            attrs["reflection_error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
            return None
        action_rule = None
        if reply.rule.param != "none" and reply.rule.direction in ("up", "down"):
            axis = self.view.axes.get(reply.rule.param)
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
        attrs[A_REFLECTION] = out
        return out

    def _remember(self, ctx: SearchContext, o: Observation, diag: Diagnostics, obs_before: list[Observation],
                  reflection: dict[str, Any] | None) -> dict[str, Any]:
        """Code-derived insight ops from the keep / discard result, plus the LLM's validated ops."""
        from virtualmle.memory import InsightOp, TrialRef, ops_from_trial

        bank = self.bank()
        parent = next((p for p in obs_before if p.number == o.base), None)
        result: dict[str, Any] = {"applied": [], "rejected": []}
        iset = bank.insights(ctx.dataset, ctx.model)
        code_ops = []
        if parent is not None and parent.ok:
            code_ops = ops_from_trial(iset, study=ctx.study_name, trial=o.number, params=o.params,
                                      baseline_params=parent.params,
                                      value=o.value if o.ok else None, baseline_value=parent.value,
                                      metric=ctx.metric, noise=diag.noise, profile=ctx.profile)
            if not o.ok and o.changed and len(o.changed) <= 2:  # a failure is evidence against the move
                code_ops += _failure_ops(iset, ctx, o, parent)
        if code_ops:
            r = bank.apply_ops(ctx.dataset, ctx.model, code_ops, profile=ctx.profile, source="code")
            result["applied"] += r.applied
            result["rejected"] += [f"{op.op} {op.id or ''}: {why}" for op, why in r.rejected]
        llm_ops = []
        rule_op = self._rule_op(ctx, o, diag, reflection)
        if rule_op is not None:
            llm_ops.append(rule_op)
        for raw in (reflection or {}).get("llm_ops", []):
            if raw.get("op") in ("ADD", "EDIT") and prompts.degenerate(raw.get("text") or ""):
                result["rejected"].append(f"{raw.get('op')}: degenerate text")
                continue
            try:
                llm_ops.append(InsightOp(op=raw["op"], id=raw.get("insight_id") or None, text=raw.get("text") or None,
                                         evidence=[TrialRef(study=ctx.study_name, trial=o.number)]))
            except ValidationError as exc:
                result["rejected"].append(f"{raw.get('op')} {raw.get('insight_id', '')}: "
                                          f"{exc.errors()[0].get('msg', 'invalid')}"[:200])
        if llm_ops:
            r = bank.apply_ops(ctx.dataset, ctx.model, llm_ops, profile=ctx.profile, source="llm")
            result["applied"] += r.applied
            result["rejected"] += [f"{op.op} {op.id or ''}: {why}"[:200] for op, why in r.rejected]
        result["code_ops"] = len(code_ops)
        result["llm_ops"] = len(llm_ops)
        return result

    def _rule_op(self, ctx: SearchContext, o: Observation, diag: Diagnostics,
                 reflection: dict[str, Any] | None) -> Any:
        """The reflection's generalised rule as an ADD of a long-term insight.

        Its text is the LLM's; it carries a machine-actionable rule only when the trial's own
        evidence backs it (the rule moves a parameter the trial changed, in the direction that
        helped, and the change was beyond noise). An unsupported LLM rule stays text, so it can
        inform a later prompt but never steer candidate generation or transfer.
        """
        from virtualmle.memory import Action, InsightOp, Rule, TrialRef, regime_condition

        text = (reflection or {}).get("rule") or ""
        if prompts.degenerate(text):
            return None
        rule = None
        ar = (reflection or {}).get("action_rule") or {}
        action = ar.get("action") if isinstance(ar, dict) else None
        if action and action.get("param") in diag.changed and diag.significance in ("better", "worse"):
            old, new = diag.changed[action["param"]]
            axis = self.view.axes.get(action["param"])
            moved = "up" if axis is not None and axis.ordered and axis.position(new) > axis.position(old) else "down"
            helped = diag.significance == "better"
            if action.get("direction") == moved and helped:
                rule = Rule(condition=regime_condition(ctx.profile), backbone=ctx.model,
                            action=Action(param=action["param"], direction=moved))
        try:
            return InsightOp(op="ADD", text=f"reflection on trial {o.number}: {text}", rule=rule,
                             evidence=[TrialRef(study=ctx.study_name, trial=o.number)])
        except ValidationError:
            return None

    def finish(self, ctx: SearchContext, extra: list[TrialRecord] | None = None) -> Path | None:
        """Distil the study into a cognition summary in the bank (once; no-op with memory off)."""
        if self._finished or not self.cfg.memory:
            return None
        from virtualmle.memory import distill
        from virtualmle.agent.diagnostics import DEFAULT_RELATIVE_NOISE

        records = list(ctx.history) + [r for r in extra or [] if all(r.number != h.number for h in ctx.history)]
        if not records:
            return None
        bank = self.bank()
        memory = self._memory(ctx, records)
        summary = distill(memory, ctx.profile, ctx.model, insights=bank.insights(ctx.dataset, ctx.model),
                          dataset=ctx.dataset, noise=DEFAULT_RELATIVE_NOISE / 2)
        path = bank.save_summary(summary)
        self._finished = True
        logger.info("cognition summary of %s written to %s", ctx.study_name, path)
        self._print(f"  memory: cognition summary with {len(summary.rules)} rule(s) -> {path}")
        return path


def _failure_ops(iset: Any, ctx: SearchContext, o: Observation, parent: Observation) -> list[Any]:
    """A failed trial: an `avoid` insight for each move it made (or a vote for an existing one)."""
    from virtualmle.memory import Action, InsightOp, Rule, TrialRef, regime_condition

    ops = []
    ref = TrialRef(study=ctx.study_name, trial=o.number)
    for name in o.changed:
        old, new = parent.params.get(name), o.params.get(name)
        if old is None or new is None:
            continue
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (old, new))
        action = (Action(param=name, direction="up" if new > old else "down", avoid=True) if numeric
                  else Action(param=name, value=new, avoid=True))
        same = iset.find_action(action)
        if same is not None:
            ops.append(InsightOp(op="UPVOTE", id=same.id, evidence=[ref]))
        else:
            ops.append(InsightOp(op="ADD", text=f"{action.describe()} from {_fmt(old)} to {_fmt(new)}: "
                                 f"the trial failed ({o.error}) on {ctx.dataset} ({ctx.model})",
                                 rule=Rule(condition=regime_condition(ctx.profile), backbone=ctx.model,
                                           action=action), evidence=[ref]))
    return ops


def _eval_users(ctx: SearchContext) -> int | None:
    users = (ctx.profile or {}).get("users")
    return int(users) if isinstance(users, (int, float)) and not isinstance(users, bool) and users > 0 else None


def _failure_class(rec: TrialRecord) -> str:
    if rec.outcome in (Outcome.DIVERGED, Outcome.OOM, Outcome.TIMEOUT, Outcome.INVALID, Outcome.PRUNED):
        return rec.outcome.value
    return "error"


RULE_SOURCES = {"diagnostic", "transfer", "memory", "momentum", "combine"}


def _kind_of(c: Candidate) -> str:
    """local / rule / global / tpe: where a candidate came from, for the ``agent`` attr."""
    if c.source in ("global", "tpe", "random", "llm"):
        return c.source
    return "rule" if set(c.sources or [c.source]) & RULE_SOURCES else "local"


def _pool_counts(ranked: list[Candidate]) -> dict[str, int]:
    """How many candidates of each kind the ranking saw."""
    out = {"local": 0, "rule": 0, "global": 0, "tpe": 0}
    for c in ranked:
        k = _kind_of(c)
        out[k] = out.get(k, 0) + 1
    return out


def _code_hypothesis(c: Candidate) -> dict[str, Any]:
    """The hypothesis code writes for a candidate it chose itself (no LLM, or a fallback)."""
    return {"text": f"{c.describe()} should improve the metric: {c.reason}",
            "mechanism": f"evidence: {', '.join(c.sources or [c.source])}",
            "risk": "within run-to-run noise, or the move overshoots",
            "changes": {k: v[1] for k, v in c.changed.items()}, "source": "code"}


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
