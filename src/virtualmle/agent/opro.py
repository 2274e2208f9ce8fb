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
import random
import time
from typing import Any

from virtualmle.agent import prompts
from virtualmle.agent.llm_call import LLMCaller
from virtualmle.agent.schemas import opro_schema
from virtualmle.agent.space_view import ProposalRejected, SpaceView, random_config, space_view
from virtualmle.errors import LLMOutputError
from virtualmle.records import A_OPRO
from virtualmle.search.method import Proposal, SearchContext, TrialRecord

logger = logging.getLogger(__name__)


class OproMethod:
    """OPRO as a search `Method` (registered as ``opro`` in `virtualmle.methods`).

    Args:
        space: the search space.
        seed: the study seed (sampling seed of the LLM, fallback draws).
        llm: an `LLMClient`, `LLMOptions`, an `LLMCaller`, an ``--llm`` spec string, or None
            (``$VIRTUALMLE_LLM`` or embedded); built on the first call in the study's run directory.
        max_llm_tokens: token budget when the client is built here from a spec (or None).
        temperature: sampling temperature (OPRO samples, it does not decode greedily).
        max_shown: best configurations shown in the prompt.
    """

    name = "opro"

    def __init__(self, *, space: Any, seed: int = 0, llm: Any = None, max_llm_tokens: int | None = None,
                 temperature: float = 0.7, max_shown: int = 20, unavailable_retries: int = 1, **_: Any) -> None:
        self.space = space
        self.seed = seed
        self.view: SpaceView = space_view(space)
        self.llm = LLMCaller.of(llm, max_tokens_budget=max_llm_tokens, retries=unavailable_retries)
        self.temperature = temperature
        self.max_shown = max_shown

    def propose(self, ctx: SearchContext) -> Proposal | None:
        """The default first; then the LLM's configuration, snapped (or a recorded random fallback)."""
        defaults = self.space.defaults()
        tried = {self.view.key(r.params) for r in ctx.history} | {self.view.key(p) for p in ctx.pending}
        if not ctx.history and self.view.key(defaults) not in tried:
            return Proposal(params=dict(defaults), user_attrs={A_OPRO: {"source": "default"}})
        history = [({n: r.params.get(n) for n in self.view.axes},
                    r.value if r.ok else None) for r in ctx.history]
        messages = prompts.opro_messages(history, list(self.view.axes.values()), metric=ctx.metric,
                                         max_shown=self.max_shown)
        schema = opro_schema(list(self.view.axes.values()))
        rng = random.Random(self.seed * 100_003 + len(ctx.history) + len(ctx.pending))
        info: dict[str, Any] = {"source": "llm", "fallback": None}
        t = time.perf_counter()
        try:
            reply = self.llm.call(messages, schema, run_dir=ctx.run_dir, purpose="opro", temperature=self.temperature,
                                  seed=self.seed * 1000 + len(ctx.history), max_tokens=400)
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
        return Proposal(params={**defaults, **config}, user_attrs={A_OPRO: info})

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

    def observe(self, ctx: SearchContext, record: TrialRecord) -> dict[str, Any]:
        """OPRO keeps no memory: nothing extra to store."""
        return {}
