"""Reading a model's reply: the JSON object inside it, validated against the caller's schema.

The reply is data only: it is parsed into a pydantic model and nothing else is done with it.
A reply that is not valid gets a short, model-readable summary of what is wrong, which the
client's re-ask shows the model (`LLMClient.structured`).
"""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

BaseModelT = TypeVar("BaseModelT", bound=BaseModel)

__all__ = ["extract_json", "parse_reply", "validation_summary"]


def extract_json(text: str) -> str:
    """The JSON object inside a reply: strips code fences and prose around the outermost braces.

    Constrained backends return bare JSON; this matters for the `none` dialect, where models wrap
    the object in ```json fences or a sentence.
    """
    start, end = text.find("{"), text.rfind("}")
    if start == -1 or end < start:
        return text.strip()
    return text[start : end + 1]


def parse_reply(text: str, schema: type[BaseModelT]) -> BaseModelT:
    """Validate a raw reply against `schema`.

    JSON syntax is read leniently (raw newlines inside strings are accepted, since unconstrained
    models write them), then re-serialised so pydantic validates in JSON mode exactly as it would
    a clean reply. Raises `ValueError` for text that is not JSON at all, `ValidationError` for
    JSON that does not match.
    """
    candidate = extract_json(text)
    try:
        data = json.loads(candidate, strict=False)
    except json.JSONDecodeError as exc:
        shown = candidate if len(candidate) <= 60 else candidate[:57] + "..."
        raise ValueError(f"not a JSON object ({exc.msg} at char {exc.pos}): {shown!r}") from None
    return schema.model_validate_json(json.dumps(data))


def validation_summary(exc: ValidationError, limit: int = 5) -> str:
    """A short, model-readable list of what is wrong: `field: message; ...`."""
    parts = []
    for error in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in error["loc"]) or "(whole object)"
        parts.append(f"{loc}: {error['msg']}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
