"""One structured LLM call, shared by the agent and OPRO.

A method is given an LLM as one of: an `LLMClient` (built by the caller), `LLMOptions` (what to
build, on the first call, in the study's run directory), an ``--llm`` spec string, or None
(``$VIRTUALMLE_LLM`` or the embedded model). `LLMCaller` turns any of these into calls with the
same retry rule: an unreachable backend is retried ``retries`` times, then the study stops with
one line that says how to resume. Nothing here knows about argparse or the command line.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from virtualmle.errors import LLMUnavailableError

logger = logging.getLogger(__name__)

LLM_ENV = "VIRTUALMLE_LLM"
UNAVAILABLE_RETRY_S = 2.0

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class LLMOptions:
    """What LLM to build, and how (the ``--llm*`` options of every command, as values).

    Attributes:
        spec: an ``--llm`` spec; None means ``$VIRTUALMLE_LLM`` or the embedded model.
        max_tokens_budget: stop the study once this many tokens are used (``--max-llm-tokens``).
        cache_dir: where ``llm_cache.sqlite`` lives (default: the run directory).
        timeout_s: seconds per HTTP request.
        n_ctx / n_threads: context size and CPU threads of local GGUF models.
    """

    spec: str | None = None
    max_tokens_budget: int | None = None
    cache_dir: Path | None = None
    timeout_s: float = 60.0
    n_ctx: int = 4096
    n_threads: int | None = None

    def resolved_spec(self) -> str | None:
        """The spec in force: the option, else ``$VIRTUALMLE_LLM``, else None (embedded)."""
        return self.spec or os.environ.get(LLM_ENV) or None

    def is_local(self) -> bool:
        """Whether the model runs in-process (parsed from the spec; nothing is loaded)."""
        from virtualmle.llm import parse_spec

        return bool(parse_spec(self.resolved_spec()).local)

    def build(self, run_dir: Path | None) -> Any:
        """The `LLMClient`, logging (and caching, unless ``cache_dir``) into ``run_dir``."""
        from virtualmle.llm import make_llm

        return make_llm(self.resolved_spec(), run_dir=run_dir, max_tokens_budget=self.max_tokens_budget,
                        cache_dir=self.cache_dir, timeout_s=self.timeout_s, n_ctx=self.n_ctx,
                        n_threads=self.n_threads)


class LLMCaller:
    """Structured calls to one LLM, built lazily.

    Args:
        llm: an `LLMClient`, `LLMOptions`, an ``--llm`` spec string, or None.
        run_dir: where a client built here logs; None: the run directory of the first call.
        retries: extra tries when the backend is unreachable.
    """

    def __init__(self, llm: Any = None, *, run_dir: Path | None = None, retries: int = 1) -> None:
        if llm is None or isinstance(llm, str):
            llm = LLMOptions(spec=llm)
        self.options: LLMOptions | None = llm if isinstance(llm, LLMOptions) else None
        self.client: Any = None if self.options is not None else llm
        self.run_dir = run_dir
        self.retries = retries

    @classmethod
    def of(cls, llm: Any, *, max_tokens_budget: int | None = None, retries: int = 1) -> LLMCaller:
        """``llm`` as a caller: an `LLMCaller` is kept (its retries set), anything else wrapped;
        ``max_tokens_budget`` fills in the budget of a spec given as a string or None."""
        if isinstance(llm, LLMCaller):
            llm.retries = retries
            return llm
        if (llm is None or isinstance(llm, str)) and max_tokens_budget is not None:
            llm = LLMOptions(spec=llm, max_tokens_budget=max_tokens_budget)
        return cls(llm, retries=retries)

    @property
    def local(self) -> bool:
        """Whether the model runs in-process (small and slow per prompt token on CPUs)."""
        if self.options is not None:
            return self.options.is_local()
        spec = getattr(self.client, "spec", None)
        return bool(getattr(spec, "local", True))

    def get(self, run_dir: Path | None) -> Any:
        """The client, built on first use in ``self.run_dir`` or else ``run_dir``."""
        if self.client is None:
            assert self.options is not None
            self.client = self.options.build(self.run_dir or run_dir)
        return self.client

    def call(self, messages: list[dict], schema: type[ModelT], *, run_dir: Path | None, purpose: str,
             seed: int, temperature: float = 0.0, max_tokens: int = 320,
             unavailable: str = "LLM backend unavailable") -> ModelT:
        """One schema-checked call; an unreachable backend is retried, then stops the study.

        Raises:
            LLMUnavailableError: still unreachable after the retries (the message says to resume).
            LLMOutputError, LLMBudgetExceeded: as `LLMClient.structured`.
        """
        attempts = max(0, self.retries) + 1
        for i in range(attempts):
            try:
                return self.get(run_dir).structured(messages, schema, temperature=temperature, seed=seed,
                                                    max_tokens=max_tokens, purpose=purpose)
            except LLMUnavailableError as exc:
                if i + 1 >= attempts:
                    raise LLMUnavailableError(
                        f"{unavailable} (tried {attempts}x): {str(exc)[:200]}; "
                        "the study stopped cleanly, run the same command again to resume") from None
                logger.info("LLM unavailable during %s, retrying: %s", purpose, exc)
                time.sleep(UNAVAILABLE_RETRY_S)
        raise AssertionError("unreachable")  # pragma: no cover

    def usage(self) -> dict[str, Any] | None:
        """Token and call totals of the client, None when it was never built."""
        return self.client.usage.to_dict() if self.client is not None else None

    def close(self) -> None:
        """Release the client (a local model's memory), if it was built."""
        if self.client is not None and hasattr(self.client, "close"):
            self.client.close()
