"""Keep API keys out of logs, error messages and reprs.

Two layers: the exact secret values this process knows (the key passed to the client and the
usual key variables in the environment), and patterns that look like keys or bearer tokens, for
keys we were never told about (one pasted into a prompt, one echoed back in a server error).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
# Environment variables whose values are always treated as secrets.
SECRET_ENV_VARS = ("OPENAI_API_KEY", "DEEPSEEK_API_KEY", "VIRTUALMLE_LLM_API_KEY")
# Values shorter than this are not masked by value (masking "a" everywhere would shred text).
_MIN_SECRET_LEN = 6
_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._\-~+/=]{8,}"),
    re.compile(r"(?i)(api[_-]?key[\"']?\s*[:=]\s*[\"']?)([^\s\"',}]{6,})"),
)


class Redactor:
    """Replaces known secret values and key-like strings with `***`."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        values = {s for s in secrets if s and len(s) >= _MIN_SECRET_LEN}
        values |= {
            v
            for name in SECRET_ENV_VARS
            if (v := os.environ.get(name)) and len(v) >= _MIN_SECRET_LEN
        }
        # Longest first so a key that contains another key is masked whole.
        self._values = sorted(values, key=len, reverse=True)

    def text(self, value: str) -> str:
        """`value` with every secret masked."""
        for secret in self._values:
            value = value.replace(secret, MASK)
        for pattern in _PATTERNS:
            if pattern.groups == 2:
                value = pattern.sub(lambda m: m.group(1) + MASK, value)
            else:
                value = pattern.sub(MASK, value)
        return value

    def obj(self, value: Any) -> Any:
        """A copy of a JSON-like structure with every string masked."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.obj(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.obj(v) for v in value]
        return value
