"""The two ways to reach a model: llama.cpp in this process, or an OpenAI-compatible endpoint.

A backend does one thing: send messages plus a JSON schema, return the raw reply text and its
token counts. Constrained decoding happens here (a llama.cpp grammar, or the endpoint's
`response_format` dialect); validation, re-asks, accounting, logging and caching are the
client's job (`virtualmle.llm.client`), so they behave the same for every backend.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from virtualmle.errors import LLMAuthError, LLMError, LLMUnavailableError
from virtualmle.llm.redact import Redactor
from virtualmle.llm.spec import LLMSpec

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Completion:
    """One reply from a backend. `sent` is the message list actually sent, when the backend had
    to change it (the `none` dialect adds the schema to the prompt); None means unchanged."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    sent: list[dict[str, Any]] | None = None


class Backend(Protocol):
    """What the client needs from a backend."""

    kind: str
    model_id: str  # identity for the cache key: changes when the weights may change
    label: str  # human-readable, for log lines and error messages (never holds a secret)
    local: bool
    price_model: str  # the name the price table is looked up by

    @property
    def dialect(self) -> str | None: ...

    def complete(
        self,
        messages: list[dict[str, Any]],
        schema: dict[str, Any],
        schema_name: str,
        *,
        temperature: float,
        seed: int,
        max_tokens: int,
    ) -> Completion: ...


def schema_instruction(schema: dict[str, Any]) -> str:
    """Prompt text that carries the schema when the endpoint cannot constrain the output."""
    return (
        "Reply with only a JSON object (no prose, no code fence) that matches this JSON schema:\n"
        + json.dumps(schema, separators=(",", ":"))
    )


def with_schema_in_prompt(
    messages: list[dict[str, Any]], schema: dict[str, Any]
) -> list[dict[str, Any]]:
    """A copy of `messages` whose last user message ends with the schema instruction.

    Appended to the user turn rather than added as a system message because some chat templates
    reject a system role or a second system message.
    """
    sent = [dict(m) for m in messages]
    for message in reversed(sent):
        if message.get("role") == "user":
            message["content"] = f"{message['content']}\n\n{schema_instruction(schema)}"
            return sent
    sent.append({"role": "user", "content": schema_instruction(schema)})
    return sent


# --------------------------------------------------------------------------------------------
# Embedded: llama.cpp in this process
# --------------------------------------------------------------------------------------------

# One loaded model per (path, n_ctx, n_threads) per process: loading costs ~0.3 s and ~100 MB for
# SmolLM2, and a study makes hundreds of calls. The lock serialises inference because a `Llama`
# object is not thread-safe.
_MODELS: dict[tuple[str, int, int | None], tuple[Any, threading.Lock]] = {}
_MODELS_LOCK = threading.Lock()

# Schema keywords llama.cpp's grammar converter may choke on (it asserts on unanchored patterns);
# dropped on a second try so the call still gets a structural grammar, and pydantic still checks.
_SOFT_KEYWORDS = ("pattern", "format")


def _load_llama(path: str, n_ctx: int, n_threads: int | None) -> tuple[Any, threading.Lock]:
    key = (path, n_ctx, n_threads)
    with _MODELS_LOCK:
        if key not in _MODELS:
            from llama_cpp import Llama

            started = time.perf_counter()
            try:
                model = Llama(
                    model_path=path, n_ctx=n_ctx, n_threads=n_threads, seed=0, verbose=False
                )
            except (ValueError, RuntimeError, OSError) as exc:
                raise LLMUnavailableError(f"cannot load GGUF model {path}: {exc}") from None
            logger.info("loaded %s in %.2f s", path, time.perf_counter() - started)
            _MODELS[key] = (model, threading.Lock())
        return _MODELS[key]


# llama-cpp-python 0.3.x's schema converter lets a JSON string contain raw control characters
# (`char ::= [^"\\] | ...`), so SmolLM2 writes literal newlines inside strings, which is invalid
# JSON. Upstream llama.cpp excludes them; do the same.
_LOOSE_CHAR = r'char ::= [^"\\] |'
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def _no_control_chars(gbnf: str) -> str:
    return gbnf.replace(_LOOSE_CHAR, _STRICT_CHAR)


def _strip_keywords(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_keywords(v) for k, v in node.items() if k not in _SOFT_KEYWORDS}
    if isinstance(node, list):
        return [_strip_keywords(v) for v in node]
    return node


class EmbeddedBackend:
    """A GGUF model run by llama-cpp-python, with the schema compiled to a llama.cpp grammar."""

    kind = "embedded"
    local = True

    def __init__(self, spec: LLMSpec, *, n_ctx: int = 4096, n_threads: int | None = None) -> None:
        path = Path(spec.model)
        self.path = str(path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        # Name + size, not the full path: the same wheel installed in another venv is the same model.
        self.model_id = f"gguf:{path.name}:{path.stat().st_size}"
        self.label = f"{spec.kind} {path.name}"
        self.price_model = path.name
        self._grammars: dict[str, Any] = {}

    @property
    def dialect(self) -> str | None:
        return "grammar"

    def _grammar(self, schema: dict[str, Any]) -> Any:
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar, json_schema_to_gbnf

        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            gbnf = None
            for candidate in (schema, _strip_keywords(schema)):
                try:
                    # Keep the caller's field order: schemas put reasoning fields before the
                    # decision so a left-to-right model commits to a reason first.
                    gbnf = json_schema_to_gbnf(
                        json.dumps(candidate), prop_order=list(candidate.get("properties", {}))
                    )
                    break
                except Exception as exc:  # the converter raises bare Exception/AssertionError
                    logger.warning("llama.cpp cannot compile this schema to a grammar (%s)", exc)
            if gbnf is None:
                # Still valid JSON guaranteed; the fields are left to validation and re-asks.
                gbnf = JSON_GBNF
            self._grammars[key] = LlamaGrammar.from_string(_no_control_chars(gbnf), verbose=False)
        return self._grammars[key]

    def complete(
        self,
        messages: list[dict[str, Any]],
        schema: dict[str, Any],
        schema_name: str,
        *,
        temperature: float,
        seed: int,
        max_tokens: int,
    ) -> Completion:
        model, lock = _load_llama(self.path, self.n_ctx, self.n_threads)
        grammar = self._grammar(schema)
        with lock:
            try:
                reply = model.create_chat_completion(
                    messages=messages,
                    grammar=grammar,
                    temperature=temperature,
                    seed=seed,
                    max_tokens=max_tokens,
                )
            except ValueError as exc:  # e.g. "Requested tokens (5000) exceed context window"
                raise LLMError(f"{self.label} (n_ctx={self.n_ctx}): {exc}") from None
        usage = reply.get("usage") or {}
        return Completion(
            text=reply["choices"][0]["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
        )

    def __repr__(self) -> str:
        return f"EmbeddedBackend({self.path!r}, n_ctx={self.n_ctx}, n_threads={self.n_threads})"


# --------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP
# --------------------------------------------------------------------------------------------

# Backoff between retries of a transient error: BASE * 2**attempt seconds, capped.
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0
RETRY_AFTER_MAX_S = 30.0
# HTTP statuses worth retrying: rate limits and server-side failures. Everything else (400, 401,
# 403, 404, 422, ...) will fail the same way again, so it surfaces at once.
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
# Statuses with which servers reject a response_format they do not speak (llama-cpp-python's
# server answers 500 to `json_schema`).
_FORMAT_REJECT_STATUS = frozenset({400, 415, 422, 500, 501})
_FORMAT_WORDS = re.compile(
    r"response_format|json_schema|json_object|'text' or|not supported|unsupported", re.I
)


class _FormatRejected(Exception):
    """The endpoint refused the response_format dialect we sent."""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class OpenAIBackend:
    """An OpenAI-compatible chat-completions endpoint through the official `openai` SDK.

    The SDK's own retries are switched off (`max_retries=0`) so that the list of retried errors
    is ours and explicit: connection errors, timeouts, HTTP 429 and 5xx (`TRANSIENT_STATUS`).
    """

    def __init__(
        self, spec: LLMSpec, *, api_key: str, timeout_s: float, redactor: Redactor,
        step_deadline_s: float | None = None,
    ) -> None:
        from openai import OpenAI

        self.kind = spec.kind
        self.model = spec.model
        self.url = spec.base_url or "https://api.openai.com/v1"
        self.local = False
        self.price_model = spec.model
        self.model_id = f"{self.url}#{spec.model}"
        self.label = f"{self.url}#{spec.model}"
        self.retries = spec.retries
        self.timeout_s = timeout_s
        # One request and its retries end by this deadline: a hanging endpoint costs at most
        # this long per step, not timeout x attempts.
        self.step_deadline_s = step_deadline_s if step_deadline_s is not None else 2 * timeout_s + BACKOFF_MAX_S
        self._remaining = timeout_s
        self._configured = spec.dialect
        self._dialect: str | None = None if spec.dialect == "auto" else spec.dialect
        self._redact = redactor
        self._sleep: Callable[[float], None] = time.sleep
        # OpenAI itself wants max_completion_tokens (reasoning models reject max_tokens); most
        # self-hosted servers only know max_tokens.
        self._max_tokens_field = "max_completion_tokens" if spec.kind == "openai" else "max_tokens"
        self._client = OpenAI(api_key=api_key, base_url=self.url, timeout=timeout_s, max_retries=0)

    @property
    def dialect(self) -> str | None:
        """The response_format dialect in use; None until auto-detection has settled it."""
        return self._dialect

    def _request(
        self,
        dialect: str,
        messages: list[dict[str, Any]],
        schema: dict[str, Any],
        schema_name: str,
        temperature: float,
        seed: int,
        max_tokens: int,
    ) -> Completion:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "seed": seed,
            self._max_tokens_field: max_tokens,
        }
        sent = None
        if dialect == "json_schema":
            name = re.sub(r"[^A-Za-z0-9_-]", "_", schema_name)[:64] or "reply"
            kwargs["response_format"] = {
                "type": "json_schema",
                # strict=False: pydantic schemas (defaults, optional fields) are rarely valid
                # strict schemas; we validate every reply ourselves anyway.
                "json_schema": {"name": name, "schema": schema, "strict": False},
            }
        elif dialect == "json_object":
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        else:
            sent = with_schema_in_prompt(messages, schema)
            kwargs["messages"] = sent
        reply = self._client.chat.completions.create(**kwargs, timeout=self._remaining)
        if not reply.choices:
            raise LLMError(f"{self.label} returned no choices")
        usage = reply.usage
        if usage is None:
            logger.warning("%s reported no token usage; counting 0", self.label)
        return Completion(
            text=reply.choices[0].message.content or "",
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            sent=sent,
        )

    def _with_retries(self, dialect: str, send: Callable[[], T]) -> T:
        import openai

        attempts = self.retries + 1
        problem = ""
        deadline = time.monotonic() + self.step_deadline_s
        for attempt in range(attempts):
            delay = min(BACKOFF_BASE_S * 2**attempt, BACKOFF_MAX_S)
            # The step deadline may leave less than the per-call timeout, never less than 0.1 s.
            self._remaining = min(self.timeout_s, max(0.1, deadline - time.monotonic()))
            try:
                return send()
            except openai.APITimeoutError:
                problem = f"timed out after {self._remaining:g} s"
            except openai.APIConnectionError as exc:
                cause = exc.__cause__ or exc.__context__
                problem = f"unreachable ({_one_line(cause or exc, 120)})"
            except openai.APIStatusError as exc:
                message = self._redact.text(_one_line(getattr(exc, "message", None) or exc))
                if (
                    dialect != "none"
                    and exc.status_code in _FORMAT_REJECT_STATUS
                    and _FORMAT_WORDS.search(message)
                ):
                    raise _FormatRejected(f"HTTP {exc.status_code}: {message}") from None
                if exc.status_code not in TRANSIENT_STATUS:
                    raise self._fatal(exc.status_code, message) from None
                problem = f"HTTP {exc.status_code}: {message}"
                retry_after = (
                    exc.response.headers.get("retry-after") if exc.response is not None else None
                )
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    delay = min(float(retry_after), RETRY_AFTER_MAX_S)
            except openai.APIError as exc:  # e.g. a reply body the SDK cannot parse: not transient
                message = self._redact.text(_one_line(exc))
                raise LLMError(
                    f"LLM endpoint {self.url} gave an unusable reply ({type(exc).__name__}): {message}"
                ) from None
            if attempt + 1 < attempts and time.monotonic() + delay >= deadline:
                problem += f"; gave up at the {self.step_deadline_s:g} s step deadline"
                attempts = attempt + 1
                break
            if attempt + 1 < attempts:
                logger.warning(
                    "LLM endpoint %s %s; retry %d/%d in %.1f s",
                    self.url,
                    problem,
                    attempt + 1,
                    self.retries,
                    delay,
                )
                self._sleep(delay)
        raise LLMUnavailableError(
            self._redact.text(
                f"LLM endpoint {self.url} {problem} ({attempts} attempt{'s' * (attempts > 1)})"
            )
        )

    def _fatal(self, status: int, message: str) -> LLMError:
        if status in (401, 403):
            # A bad key is not transient: no retry, and running the command again cannot help.
            what = "refused the API key" if status == 401 else "denied this API key access to the model"
            return LLMAuthError(self._redact.text(
                f"LLM endpoint {self.url} answered HTTP {status} ({what}): check OPENAI_API_KEY; "
                f"retrying cannot fix a refused key: {message}"))
        hints = {
            404: f"not found: check that the URL ends in /v1 and that model {self.model!r} is served",
        }
        text = f"LLM endpoint {self.url} answered HTTP {status}"
        if status in hints:
            text += f" ({hints[status]})"
        text = self._redact.text(f"{text}: {message}")
        return LLMUnavailableError(text) if status in hints else LLMError(text)

    def complete(
        self,
        messages: list[dict[str, Any]],
        schema: dict[str, Any],
        schema_name: str,
        *,
        temperature: float,
        seed: int,
        max_tokens: int,
    ) -> Completion:
        candidates = [self._dialect] if self._dialect else ["json_schema", "json_object", "none"]
        for i, dialect in enumerate(candidates):
            try:
                completion = self._with_retries(
                    dialect,
                    lambda: self._request(
                        dialect, messages, schema, schema_name, temperature, seed, max_tokens
                    ),
                )
            except _FormatRejected as exc:
                if self._configured == "auto" and i + 1 < len(candidates):
                    logger.info(
                        "%s rejects response_format %s (%s); trying %s",
                        self.url,
                        dialect,
                        exc,
                        candidates[i + 1],
                    )
                    continue
                raise LLMUnavailableError(
                    f"LLM endpoint {self.url} rejects response_format dialect {dialect!r} ({exc}); "
                    "pick another with ?dialect=json_schema|json_object|none in --llm"
                ) from None
            if self._dialect is None:
                logger.info("%s: using response_format dialect %s", self.url, dialect)
                self._dialect = dialect
            return completion
        raise AssertionError("unreachable: the 'none' dialect is never format-rejected")

    def __repr__(self) -> str:
        return (
            f"OpenAIBackend({self.label!r}, dialect={self._dialect!r}, timeout_s={self.timeout_s})"
        )
