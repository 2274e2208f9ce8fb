"""The backend contract: what the client needs from a way to reach a model.

There are two backends: llama.cpp in this process (`llm/embedded.py`, `EmbeddedBackend`) and an
OpenAI-compatible endpoint (`llm/openai_http.py`, `OpenAIBackend`). A backend does one thing:
send messages plus a JSON schema, return the raw reply text and its token counts. Constrained
decoding happens there (a llama.cpp grammar, or the endpoint's `response_format` dialect);
validation, re-asks, accounting, logging and caching are the client's job
(`virtualmle.llm.client`), so they behave the same for every backend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol


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
