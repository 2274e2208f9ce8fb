"""`LLMClient`: schema-checked structured calls with re-asks, accounting, a log and a cache.

One `structured()` call is one or more requests to the backend: the first ask, then up to
`max_reasks` re-asks that show the model its invalid reply and the validation error. Each
request goes through the same steps: cache lookup (a hit is free), budget check, backend call,
cache store, pydantic validation, one log line. The reply is data only: it is parsed into the
caller's pydantic model and nothing else is done with it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from virtualmle.errors import ConfigError, LLMBudgetExceeded, LLMError, LLMOutputError
from virtualmle.llm.backends import Backend
from virtualmle.llm.embedded import EmbeddedBackend
from virtualmle.llm.openai_http import OpenAIBackend
from virtualmle.llm.cache import CACHE_NAME, CachedReply, ResponseCache, request_key
from virtualmle.llm.log import LOG_NAME, CallLog
from virtualmle.llm.pricing import CostModel, is_local_url
from virtualmle.llm.redact import Redactor
from virtualmle.llm.reply import parse_reply, validation_summary
from virtualmle.llm.spec import LLMSpec, parse_spec

logger = logging.getLogger(__name__)

BaseModelT = TypeVar("BaseModelT", bound=BaseModel)

DEFAULT_MAX_REASKS = 2
_ROLES = frozenset({"system", "user", "assistant"})
REASK_TEMPLATE = (
    "Your reply was not valid: {error}\n"
    "Reply again with only the corrected JSON object, fixing exactly these problems."
)


@dataclass
class Usage:
    """Running totals for one client (one study).

    Tokens, seconds and cost count only requests that reached the backend; cache hits are
    counted in `cache_hits` and cost nothing. `calls` counts `structured()` calls, `requests`
    counts backend requests plus cache hits (first asks and re-asks), `reasks` the re-asks.
    `cost_known` is False when a hosted model is missing from the price table (then `cost_usd`
    covers only the priced part, i.e. zero).
    """

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cost_usd: float = 0.0
    cache_hits: int = 0
    requests: int = 0
    reasks: int = 0
    cost_known: bool = True

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens: what `--max-llm-tokens` is measured in."""
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready totals (for the study report)."""
        return {**dataclasses.asdict(self), "total_tokens": self.total_tokens}


def _check_messages(messages: list[dict[str, Any]]) -> None:
    # A malformed message list is a bug in the caller, not user input: ValueError, traceback kept.
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise ValueError(f"messages[{i}] needs a role in {sorted(_ROLES)}: {message!r:.80}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"messages[{i}]['content'] must be a string")


class LLMClient:
    """Structured, validated LLM calls against one backend, with totals for the study.

    Create with `make_llm`. Thread-safe: requests to one embedded model are serialised.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        spec: LLMSpec,
        redactor: Redactor,
        log: CallLog | None = None,
        cache: ResponseCache | None = None,
        max_tokens_budget: int | None = None,
        max_reasks: int = DEFAULT_MAX_REASKS,
    ) -> None:
        self.backend = backend
        self.spec = spec
        self.log = log
        self.cache = cache
        self.max_tokens_budget = max_tokens_budget
        self.max_reasks = max_reasks
        self._redact = redactor
        self._cost = CostModel(
            backend.price_model, local=backend.local or is_local_url(spec.base_url)
        )
        self._usage = Usage(cost_known=self._cost.known)
        self._lock = threading.Lock()

    @property
    def usage(self) -> Usage:
        """A snapshot of the totals so far."""
        with self._lock:
            return dataclasses.replace(self._usage)

    @property
    def model(self) -> str:
        """Which model this client talks to (for reports; holds no secret)."""
        return self.backend.label

    @property
    def dialect(self) -> str | None:
        """How the schema is enforced: `grammar` (embedded), an HTTP dialect, or None before an
        auto-detecting HTTP client's first call."""
        return self.backend.dialect

    def __repr__(self) -> str:
        return self._redact.text(
            f"LLMClient(model={self.backend.label!r}, dialect={self.dialect!r}, "
            f"budget={self.max_tokens_budget}, cache={self.cache is not None})"
        )

    # -- budget ---------------------------------------------------------------------------------

    def _budget_check(self, *, after: bool) -> None:
        if self.max_tokens_budget is None:
            return
        with self._lock:
            used = self._usage.total_tokens
        budget = self.max_tokens_budget
        if (after and used > budget) or (not after and used >= budget):
            raise LLMBudgetExceeded(
                f"LLM token budget spent: {used} of {budget} tokens used (--max-llm-tokens)"
            )

    # -- one request ----------------------------------------------------------------------------

    def _ask(
        self,
        messages: list[dict[str, Any]],
        schema_json: dict[str, Any],
        schema_name: str,
        settings: dict[str, Any],
        entry: dict[str, Any],
    ) -> str:
        """Send one request (or replay it from the cache); returns the raw reply text and fills
        the accounting fields of the log `entry`."""
        key = None
        if self.cache is not None:
            key = request_key(
                self.backend.model_id,
                messages,
                schema_json,
                {**settings, "dialect_option": self.spec.dialect},
            )
            hit = self.cache.get(key)
            if hit is not None:
                entry.update(
                    messages=messages,
                    cache_hit=True,
                    prompt_tokens=0,
                    completion_tokens=0,
                    latency_s=0.0,
                    cost_usd=0.0,
                )
                with self._lock:
                    self._usage.cache_hits += 1
                    self._usage.requests += 1
                return self._redact.text(hit.text)  # a cache written before redaction existed

        self._budget_check(after=False)
        started = time.perf_counter()
        try:
            completion = self.backend.complete(
                messages,
                schema_json,
                schema_name,
                temperature=settings["temperature"],
                seed=settings["seed"],
                max_tokens=settings["max_tokens"],
            )
        except LLMError as exc:
            entry.update(
                messages=messages,
                cache_hit=False,
                prompt_tokens=0,
                completion_tokens=0,
                latency_s=round(time.perf_counter() - started, 4),
                cost_usd=0.0,
                response=None,
                ok=False,
                error=f"{type(exc).__name__}: {exc}",
            )
            self._write(entry)
            raise
        latency = time.perf_counter() - started
        # A reply may quote a secret (an endpoint or proxy echoing the Authorization header):
        # masked here, before anything stores, shows, caches or sends it on.
        completion = dataclasses.replace(completion, text=self._redact.text(completion.text))
        cost = self._cost.per_call(completion.prompt_tokens, completion.completion_tokens)
        entry.update(
            messages=completion.sent or messages,
            dialect=self.backend.dialect,
            cache_hit=False,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            latency_s=round(latency, 4),
            cost_usd=cost,
        )
        with self._lock:
            u = self._usage
            u.requests += 1
            u.prompt_tokens += completion.prompt_tokens
            u.completion_tokens += completion.completion_tokens
            u.seconds += latency
            u.cost_usd += cost or 0.0
        if self.cache is not None and key is not None:
            self.cache.put(
                key,
                self.backend.model_id,
                CachedReply(
                    completion.text, completion.prompt_tokens, completion.completion_tokens
                ),
            )
        return completion.text

    def _write(self, entry: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.append(entry)

    # -- the public call ------------------------------------------------------------------------

    def structured(
        self,
        messages: list[dict[str, Any]],
        schema: type[BaseModelT],
        *,
        temperature: float = 0.0,
        seed: int = 0,
        max_tokens: int = 512,
        purpose: str = "",
    ) -> BaseModelT:
        """Ask for a reply matching `schema` and return it validated.

        Raises `LLMOutputError` when the reply is still invalid after `max_reasks` re-asks,
        `LLMUnavailableError` when the backend cannot be reached, `LLMBudgetExceeded` when the
        token budget is spent (checked before each request and after it; the request that
        crosses the budget raises, but its reply is cached, so a resumed study with a larger
        budget gets it for free).
        """
        _check_messages(messages)
        schema_json = schema.model_json_schema()
        settings = {
            "temperature": float(temperature),
            "seed": int(seed),
            "max_tokens": int(max_tokens),
        }
        call_id = uuid.uuid4().hex[:12]
        conversation = [{"role": m["role"], "content": m["content"]} for m in messages]
        with self._lock:
            self._usage.calls += 1
        error = ""
        for reask in range(self.max_reasks + 1):
            entry: dict[str, Any] = {
                "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "call_id": call_id,
                "purpose": purpose,
                "model": self.backend.label,
                "backend": self.backend.kind,
                "dialect": self.backend.dialect,
                "schema": schema.__name__,
                "reask": reask,
                **settings,
            }
            if reask:
                with self._lock:
                    self._usage.reasks += 1
            text = self._ask(conversation, schema_json, schema.__name__, settings, entry)
            try:
                obj = parse_reply(text, schema)
            except (ValidationError, ValueError) as exc:
                error = validation_summary(exc) if isinstance(exc, ValidationError) else str(exc)
                entry.update(response=text, ok=False, error=error)
                self._write(entry)
                self._budget_check(after=True)
                conversation = conversation + [
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": REASK_TEMPLATE.format(error=error)},
                ]
                continue
            entry.update(response=text, ok=True, error=None)
            self._write(entry)
            self._budget_check(after=True)
            return obj
        raise LLMOutputError(
            self._redact.text(
                f"{self.backend.label}: no valid {schema.__name__} after {self.max_reasks} "
                f"re-ask{'s' * (self.max_reasks != 1)}"
                + (f" (purpose {purpose!r})" if purpose else "")
                + f": {error}"
            )
        )

    def close(self) -> None:
        """Release the cache file (the embedded model stays loaded for reuse in this process)."""
        if self.cache is not None:
            self.cache.close()


def make_llm(
    spec: str | LLMSpec | None,
    *,
    run_dir: Path | None = None,
    max_tokens_budget: int | None = None,
    cache_dir: Path | None = None,
    timeout_s: float = 60,
    step_deadline_s: float | None = None,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    max_reasks: int = DEFAULT_MAX_REASKS,
) -> LLMClient:
    """Build the client for an `--llm` spec (None means the embedded SmolLM2).

    `run_dir` receives `llm_log.jsonl` and, unless `cache_dir` is given, `llm_cache.sqlite`;
    without either there is no log and no cache. `timeout_s` applies to HTTP requests, and one
    request with its retries ends within `step_deadline_s` (default twice `timeout_s` + 8 s);
    `n_ctx`/`n_threads` to local GGUF models (None threads = llama.cpp's default). Nothing is
    loaded or contacted here: the model loads, or the endpoint is first reached, on the first call.
    """
    parsed = spec if isinstance(spec, LLMSpec) else parse_spec(spec)
    if max_tokens_budget is not None and max_tokens_budget < 1:
        raise ConfigError(f"--max-llm-tokens must be a positive integer, not {max_tokens_budget}")
    if not timeout_s > 0:
        raise ConfigError(f"LLM timeout must be positive seconds, not {timeout_s}")
    if n_ctx < 256:
        raise ConfigError(f"LLM context size n_ctx must be at least 256, not {n_ctx}")
    if n_threads is not None and n_threads < 1:
        raise ConfigError(f"LLM n_threads must be at least 1, not {n_threads}")
    if not 0 <= max_reasks <= 10:
        raise ConfigError(f"max_reasks must be 0-10, not {max_reasks}")

    api_key = os.environ.get("OPENAI_API_KEY") or ""
    redactor = Redactor([api_key])
    backend: Backend
    if parsed.local:
        backend = EmbeddedBackend(parsed, n_ctx=n_ctx, n_threads=n_threads)
    else:
        if not api_key:
            if parsed.kind == "openai" and not is_local_url(parsed.base_url):
                raise ConfigError(
                    f"--llm {parsed.raw}: set OPENAI_API_KEY in the environment "
                    "(and OPENAI_BASE_URL for a non-OpenAI endpoint)"
                )
            # Self-hosted servers ignore the key, but the SDK insists on a non-empty one.
            api_key = "no-key-required"
        backend = OpenAIBackend(parsed, api_key=api_key, timeout_s=timeout_s, redactor=redactor,
                                step_deadline_s=step_deadline_s)

    log = CallLog(Path(run_dir) / LOG_NAME, redactor) if run_dir is not None else None
    cache_file = (
        Path(cache_dir) / CACHE_NAME
        if cache_dir is not None
        else (Path(run_dir) / CACHE_NAME if run_dir is not None else None)
    )
    cache = ResponseCache(cache_file) if cache_file is not None else None
    return LLMClient(
        backend,
        spec=parsed,
        redactor=redactor,
        log=log,
        cache=cache,
        max_tokens_budget=max_tokens_budget,
        max_reasks=max_reasks,
    )


__all__ = [
    "LLMClient",
    "Usage",
    "make_llm",
]
