"""Parse cache: a parsed file stored as NumPy arrays, keyed by the file's content.

A trial runs in a fresh process and would otherwise re-parse its dataset every time. The cache
holds one ``<key>.npz`` per (file content, format, reader options, cache version): an
uncompressed archive of ``.npy`` arrays (flat ``items``, ``offsets``, optional ``timestamps``,
the file's ``user_ids`` and ``item_ids`` as fixed-width strings, and the parse metadata as JSON
bytes), which NumPy loads in milliseconds. One file per entry so
a write is atomic (`virtualmle.files.write_atomic`); an entry that fails to load or to validate is
ignored, logged and rebuilt.

The same directory and atomic write hold derived per-dataset tables (`store_arrays` /
`load_arrays`): the train-split score priors (``priors-<key>.npz``, `training/priors.py`).

Location: ``$VIRTUALMLE_CACHE_DIR``, default ``~/.cache/virtualmle/cache``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from virtualmle.data.parsing import Parsed
from virtualmle.files import write_atomic

logger = logging.getLogger(__name__)

# Bump when a reader's output changes, so old entries are never read as new ones.
CACHE_VERSION = 2  # 2: the file's user and item ids are stored
# Files up to this size are hashed in full (Beauty, 1 MB: ~1 ms); larger ones by size, mtime
# and three 4 MiB samples, so a trial on a multi-GB dump does not spend seconds hashing.
FULL_HASH_LIMIT = 256 * 2**20
_SAMPLE = 4 * 2**20


def cache_dir() -> Path:
    """The cache directory: `$VIRTUALMLE_CACHE_DIR`, else `~/.cache/virtualmle/cache`."""
    env = os.environ.get("VIRTUALMLE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "virtualmle" / "cache"


def file_digest(path: Path) -> str:
    """sha256 of the file (large files: of size, mtime and three samples), as hex."""
    h = hashlib.sha256()
    st = path.stat()
    with open(path, "rb") as fh:
        if st.st_size <= FULL_HASH_LIMIT:
            for chunk in iter(lambda: fh.read(2**20), b""):
                h.update(chunk)
            return h.hexdigest()
        h.update(f"sampled:{st.st_size}:{st.st_mtime_ns}".encode())
        for start in (0, st.st_size // 2, st.st_size - _SAMPLE):
            fh.seek(start)
            h.update(fh.read(_SAMPLE))
    return "sampled-" + h.hexdigest()


def cache_key(digest: str, fmt: str, options: Mapping | None = None) -> str:
    """The entry name for a file digest, a format and the reader options."""
    blob = json.dumps(
        {"v": CACHE_VERSION, "digest": digest, "format": fmt, "options": dict(options or {})}, sort_keys=True
    )
    return f"{fmt}-{hashlib.sha256(blob.encode()).hexdigest()[:32]}"


def entry_path(key: str, root: Path | None = None) -> Path:
    """Where the entry for `key` lives."""
    return (root or cache_dir()) / f"{key}.npz"


def _validate(p: Parsed) -> None:
    """Cheap structural checks, so a damaged-but-loadable entry is not trusted."""
    off = p.offsets
    if off.ndim != 1 or off.size < 2 or off[0] != 0 or off[-1] != p.items.size:
        raise ValueError("offsets do not match items")
    if np.any(np.diff(off) < 1):
        raise ValueError("empty user")
    if p.items.size and (p.items.min() < 1 or p.items.max() != p.num_items):
        raise ValueError("item ids out of range")
    if p.timestamps is not None and p.timestamps.shape != p.items.shape:
        raise ValueError("timestamps do not match items")
    if p.user_ids is not None and p.user_ids.shape != (p.num_users,):
        raise ValueError("user ids do not match users")
    if p.item_ids is not None and p.item_ids.shape != (p.num_items,):
        raise ValueError("item ids do not match items")


def load(key: str, root: Path | None = None) -> Parsed | None:
    """The cached parse for `key`, or None when there is none or it is unusable."""
    path = entry_path(key, root)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            items = npz["items"].astype(np.int64, copy=False)
            offsets = npz["offsets"].astype(np.int64, copy=False)
            timestamps = npz["timestamps"].astype(np.int64, copy=False) if "timestamps" in npz.files else None
            meta = json.loads(bytes(npz["meta"]).decode("utf-8"))
            user_ids = npz["user_ids"] if "user_ids" in npz.files else None
            item_ids = npz["item_ids"] if "item_ids" in npz.files else None
        parsed = Parsed(items, offsets, int(meta.pop("num_items")), timestamps, meta, user_ids, item_ids)
        _validate(parsed)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, TypeError) as exc:
        # A half-copied or damaged entry must never break a trial: parse the source again.
        logger.warning("ignoring unusable cache entry %s (%s); re-parsing", path, exc)
        return None
    return parsed


def store(key: str, parsed: Parsed, root: Path | None = None) -> Path | None:
    """Write `parsed` under `key` atomically; returns the entry path, None if not writable."""
    meta = dict(parsed.meta, num_items=int(parsed.num_items))
    # int32 halves the entry and load time; ids beyond 2**31 keep int64.
    item_dtype = np.int32 if parsed.num_items < 2**31 else np.int64
    arrays = {
        "items": parsed.items.astype(item_dtype),
        "offsets": parsed.offsets.astype(np.int64),
        "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
    }
    if parsed.timestamps is not None:
        arrays["timestamps"] = parsed.timestamps.astype(np.int64)
    for name in ("user_ids", "item_ids"):
        ids = getattr(parsed, name)
        if ids is not None:
            arrays[name] = np.asarray(ids, dtype=str)  # fixed-width unicode: no pickle needed
    return store_arrays(key, arrays, root)


def load_arrays(key: str, root: Path | None = None) -> dict[str, np.ndarray] | None:
    """Every array of the entry `key`, or None when there is none or it cannot be read.

    For derived per-dataset tables (the train-split priors); the caller validates the content.
    """
    path = entry_path(key, root)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        logger.warning("ignoring unusable cache entry %s (%s); recomputing", path, exc)
        return None


def store_arrays(key: str, arrays: Mapping[str, np.ndarray], root: Path | None = None) -> Path | None:
    """Write `arrays` under `key` atomically; returns the entry path, None if not writable."""
    root = root or cache_dir()
    path = entry_path(key, root)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        write_atomic(path, buf.getvalue())
    except OSError as exc:
        # A read-only or full cache disk costs speed, not correctness.
        logger.warning("cannot write cache entry %s (%s); continuing without it", path, exc)
        return None
    return path
