"""The HTTP backend: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama,
llama.cpp's server), through the official `openai` SDK.

It finds the `response_format` dialect the endpoint speaks (JSON schema, JSON object, or the
schema in the prompt), retries transient errors with backoff within one step's deadline, and
turns everything else into one clear error with the API key redacted.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from virtualmle.errors import LLMAuthError, LLMError, LLMUnavailableError
from virtualmle.llm.backends import Completion, with_schema_in_prompt
from virtualmle.llm.redact import Redactor
from virtualmle.llm.spec import LLMSpec

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["OpenAIBackend"]

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
