"""The embedded backend: llama.cpp in this process (SmolLM2 by default, any GGUF file).

Constrained decoding by a llama.cpp grammar compiled from the reply's JSON schema; one loaded
model per file, context size and thread count per process, shared by every client.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from virtualmle.errors import LLMError, LLMUnavailableError
from virtualmle.llm.backends import Completion
from virtualmle.llm.spec import LLMSpec

logger = logging.getLogger(__name__)

__all__ = ["EmbeddedBackend"]

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


