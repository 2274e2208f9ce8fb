"""OPRO, the paper's LLM baseline: the model sees only the (configuration, score) history.

No diagnostics, no reflection, no memory, no candidates: each step shows the scored
configurations in ascending order and asks for a new full configuration (Yang et al., "Large
Language Models as Optimizers", 2023). The reply is schema-checked, every value snapped to the
search space (an out-of-range number is clipped to the nearest legal value and recorded), and a
configuration that breaks a constraint or repeats an earlier one is replaced by a random legal
one, recorded as a fallback. An LLM that never returns valid output also gets a random
configuration, recorded. The first trial is the default configuration, as for the agent, so the
two are compared from the same start.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from typing import Any

from virtualmle.agent import prompts
from virtualmle.agent.candidates import ProposalRejected, SpaceView, random_config, space_view
from virtualmle.agent.schemas import opro_schema
from virtualmle.errors import LLMOutputError, LLMUnavailableError
from virtualmle.search.method import Outcome, Proposal, SearchContext, TrialRecord

logger = logging.getLogger(__name__)

UNAVAILABLE_RETRY_S = 2.0


class OproMethod:
    """OPRO as a search `Method` (registered as ``opro``).

    Args:
        space: the search space.
        seed: the study seed (sampling seed of the LLM, fallback draws).
        llm: an `LLMClient`, an ``--llm`` spec string, or None (``$VIRTUALMLE_LLM`` or embedded).
        temperature: sampling temperature (OPRO samples, it does not decode greedily).
        max_shown: best configurations shown in the prompt.
    """

    name = "opro"

    def __init__(self, *, space: Any, seed: int = 0, llm: Any = None, max_llm_tokens: int | None = None,
                 temperature: float = 0.7, max_shown: int = 20, unavailable_retries: int = 1, **_: Any) -> None:
        self.space = space
        self.seed = seed
        self.view: SpaceView = space_view(space)
        self._llm = llm if llm is not None and not isinstance(llm, str) else None
        self._llm_spec = llm if isinstance(llm, str) else None
        self._max_tokens = max_llm_tokens
        self.temperature = temperature
        self.max_shown = max_shown
        self.unavailable_retries = unavailable_retries

    def llm(self, ctx: SearchContext) -> Any:
        """The LLM client (built on first use, logging into the study's run directory)."""
        if self._llm is None:
            from virtualmle.llm import make_llm

            spec = self._llm_spec or os.environ.get("VIRTUALMLE_LLM") or None
            self._llm = make_llm(spec, run_dir=ctx.run_dir, max_tokens_budget=self._max_tokens)
        return self._llm

    def propose(self, ctx: SearchContext) -> Proposal | None:
        """The default first; then the LLM's configuration, snapped (or a recorded random fallback)."""
        defaults = self.space.defaults()
        tried = {self.view.key(r.params) for r in ctx.history} | {self.view.key(p) for p in ctx.pending}
        if not ctx.history and self.view.key(defaults) not in tried:
            return Proposal(params=dict(defaults), user_attrs={"opro": {"source": "default"}})
        history = [({n: r.params.get(n) for n in self.view.axes},
                    r.value if r.outcome is Outcome.COMPLETE and r.value is not None and math.isfinite(r.value)
                    else None) for r in ctx.history]
        messages = prompts.opro_messages(history, list(self.view.axes.values()), metric=ctx.metric,
                                         max_shown=self.max_shown)
        schema = opro_schema(list(self.view.axes.values()))
        rng = random.Random(self.seed * 100_003 + len(ctx.history) + len(ctx.pending))
        info: dict[str, Any] = {"source": "llm", "fallback": None}
        t = time.perf_counter()
        try:
            reply = self._call(ctx, messages, schema, seed=self.seed * 1000 + len(ctx.history))
        except LLMOutputError as exc:
            reply = None
            info["fallback"] = f"llm_output_error: {str(exc)[:160]}"
        info["llm_seconds"] = round(time.perf_counter() - t, 4)
        config = None
        if reply is not None:
            try:
                config, clipped = self.snap(reply.model_dump())
                info["raw"] = {k: v for k, v in reply.model_dump().items()}
                if clipped:
                    info["clipped"] = clipped
                why = self.view.violation(config)
                if why:
                    info["fallback"] = f"constraint: {why[:120]}"
                    config = None
                elif self.view.key(config) in tried:
                    info["fallback"] = "duplicate of an earlier configuration"
                    config = None
            except ProposalRejected as exc:
                info["fallback"] = f"{exc.reason}: {str(exc)[:120]}"
                config = None
        if config is None:
            config = random_config(self.view, rng, tried)
            if config is None:
                return None
            info["source"] = "random"
        return Proposal(params={**defaults, **config}, user_attrs={"opro": info})

    def snap(self, raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Every parameter snapped to the space; names of those clipped from out of range."""
        out: dict[str, Any] = {}
        clipped: list[str] = []
        for name, axis in self.view.axes.items():
            if name not in raw:
                raise ProposalRejected("garbage", f"parameter {name!r} missing")
            try:
                out[name] = axis.snap(raw[name], strict=True)
            except ProposalRejected as exc:
                if exc.reason != "out_of_range":
                    raise
                out[name] = axis.snap(raw[name], strict=False)
                clipped.append(name)
        return out, clipped

    def _call(self, ctx: SearchContext, messages: list[dict], schema: Any, *, seed: int) -> Any:
        attempts = max(0, self.unavailable_retries) + 1
        for i in range(attempts):
            try:
                return self.llm(ctx).structured(messages, schema, temperature=self.temperature, seed=seed,
                                                max_tokens=400, purpose="opro")
            except LLMUnavailableError as exc:
                if i + 1 >= attempts:
                    raise LLMUnavailableError(
                        f"LLM backend unavailable (tried {attempts}x): {str(exc)[:200]}; the study stopped "
                        "cleanly, run the same command again to resume") from None
                time.sleep(UNAVAILABLE_RETRY_S)
        raise AssertionError("unreachable")  # pragma: no cover

    def observe(self, ctx: SearchContext, record: TrialRecord) -> dict[str, Any]:
        """OPRO keeps no memory: nothing extra to store."""
        return {}
