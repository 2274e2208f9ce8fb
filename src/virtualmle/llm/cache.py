"""The response cache: one SQLite file mapping a request key to the model's raw reply.

The key hashes everything that determines the reply (model identity, messages, schema, sampling
settings including the seed), so a re-run with the same seed replays exactly and a resumed study
does not pay for a request twice. Raw replies are cached whether or not they validated: replaying
an invalid reply reproduces the same re-ask, which keeps a replayed call identical to the original.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_NAME = "llm_cache.sqlite"
# Bump when the key recipe changes, so old entries are never served for a new recipe.
KEY_VERSION = 1


@dataclass(frozen=True)
class CachedReply:
    """A stored reply and the tokens it cost when it was first produced."""

    text: str
    prompt_tokens: int
    completion_tokens: int


def request_key(
    model_id: str, messages: list[dict[str, Any]], schema: dict[str, Any], settings: dict[str, Any]
) -> str:
    """A stable hex digest of one request."""
    payload = json.dumps(
        {"v": KEY_VERSION, "model": model_id, "messages": messages, "schema": schema, **settings},
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ResponseCache:
    """SQLite-backed `key -> CachedReply`. Safe to share between processes (SQLite locking)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
        with self._conn:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT NOT NULL, "
                "text TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, "
                "completion_tokens INTEGER NOT NULL, created REAL NOT NULL)"
            )

    def get(self, key: str) -> CachedReply | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT text, prompt_tokens, completion_tokens FROM replies WHERE key = ?", (key,)
            ).fetchone()
        return CachedReply(*row) if row else None

    def put(self, key: str, model: str, reply: CachedReply) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?)",
                (key, model, reply.text, reply.prompt_tokens, reply.completion_tokens, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
