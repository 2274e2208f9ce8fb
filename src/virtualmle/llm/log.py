"""The JSONL call log: one line per request to the model (first ask, each re-ask, cache hits).

Lines are appended with a single `write` of a complete line and flushed, so a crash leaves at
worst a missing line, never a torn one that breaks the reader. Every string passes through the
`Redactor` before it reaches the file.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from virtualmle.llm.redact import Redactor

LOG_NAME = "llm_log.jsonl"


class CallLog:
    """Appends redacted entries to `<run_dir>/llm_log.jsonl`."""

    def __init__(self, path: Path, redactor: Redactor) -> None:
        self.path = path
        self._redactor = redactor
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(self._redactor.obj(entry), ensure_ascii=False, default=str)
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()


def read_log(path: Path) -> list[dict[str, Any]]:
    """All entries of a call log (for reports and tests); a missing file reads as empty."""
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def log_summary(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals recomputed from log entries: what a client's `usage` equals for its own log, and a
    run's LLM usage in reports. A key missing from an older entry counts as zero."""
    prompt = sum(int(e.get("prompt_tokens") or 0) for e in entries)
    completion = sum(int(e.get("completion_tokens") or 0) for e in entries)
    return {
        "calls": len({e.get("call_id") for e in entries}),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "tokens": prompt + completion,
        "seconds": sum(float(e.get("latency_s") or 0.0) for e in entries),
        "cost_usd": sum(float(e.get("cost_usd") or 0.0) for e in entries),
        "cache_hits": sum(1 for e in entries if e.get("cache_hit")),
        "reasks": sum(1 for e in entries if int(e.get("reask") or 0) > 0),
    }
