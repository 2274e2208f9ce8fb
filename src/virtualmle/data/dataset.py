"""The in-memory dataset every trial trains on, and `load_dataset`, which finds, parses (through
the cache) and slices one. Formats: `virtualmle.data.readers`; cache: `virtualmle.data.cache`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from virtualmle.data import cache as _cache
from virtualmle.data import readers
from virtualmle.errors import DataError

logger = logging.getLogger(__name__)

# `--data` names -> file names in the data directory (the S3-Rec / VirtualMLE release files).
DATASET_FILES: dict[str, str] = {
    "beauty": "Beauty.txt",
    "baby": "Baby.txt",
    "pet_supplies": "Pet_Supplies.txt",
    "sports": "Sports_and_Outdoors.txt",
    "toys": "Toys_and_Games.txt",
}


def data_dir() -> Path:
    """The data directory: `$VIRTUALMLE_DATA_DIR`, else `~/.cache/virtualmle/data`."""
    env = os.environ.get("VIRTUALMLE_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "virtualmle" / "data"


@dataclass
class SequenceData:
    """User interaction sequences, items re-indexed 1..num_items (0 is padding).

    Attributes:
        name: short name (`beauty`) or the file stem.
        sequences: one int64 array per user, items in time order.
        num_items: largest item id.
        timestamps: per-user int64 unix seconds aligned with `sequences`, or None.
        source: the file it came from.
        meta: how it was read: `format`, `sha256`, `cache` (hit/miss/off), re-indexing,
            dropped users, `slice_users`.
        user_ids: str (num_users,), each user's id in the file, or None.
        item_ids: str (num_items,), the file's id of item k at index k - 1, or None.
    """

    name: str
    sequences: list[np.ndarray]
    num_items: int
    timestamps: list[np.ndarray] | None = None
    source: Path | None = None
    meta: dict = field(default_factory=dict)
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def __repr__(self) -> str:
        ts = ", timestamps" if self.timestamps is not None else ""
        return (
            f"SequenceData({self.name!r}, users={self.num_users}, items={self.num_items}, "
            f"interactions={self.num_interactions}{ts})"
        )


_default_data_dir = data_dir  # `load_dataset` has a parameter of the same name

# Where the release files come from, for the "not found" message.
_SOURCES = {
    "beauty": "the S3-Rec release (github.com/aHuiWang/CIKM2020-S3Rec, folder data/)",
    "sports": "the S3-Rec release (github.com/aHuiWang/CIKM2020-S3Rec, folder data/)",
    "toys": "the S3-Rec release (github.com/aHuiWang/CIKM2020-S3Rec, folder data/)",
    "baby": "the VirtualMLE paper's code (github.com/cst20/VirtualMLE-is-all-you-need-to-Recommend)",
    "pet_supplies": "the VirtualMLE paper's code (github.com/cst20/VirtualMLE-is-all-you-need-to-Recommend)",
}


def dataset_name(spec: str) -> str | None:
    """The short name (`beauty`, ...) that `spec` spells, or None.

    Accepts the names in any case, `-` for `_`, and the file names or stems
    (`Sports_and_Outdoors`, `Toys_and_Games.txt`).
    """
    key = spec.strip().lower().replace("-", "_")
    if key in DATASET_FILES:
        return key
    for name, file in DATASET_FILES.items():
        if key in (file.lower(), Path(file).stem.lower()):
            return name
    return None


def resolve_dataset(spec: str, root: Path | None = None) -> tuple[Path, str]:
    """(file, name) for a dataset name or a path; a missing file is a `DataError`.

    A name is looked up in the data directory (`root`, else `data_dir()`). Anything else is a
    path; a relative path that does not exist is also tried inside the data directory, and a
    directory stands for the RecBole-style `<dir>/<dir>.inter` inside it.
    """
    root = Path(root).expanduser() if root is not None else _default_data_dir()
    name = dataset_name(spec)
    if name is not None and not Path(spec).expanduser().is_file():
        path = root / DATASET_FILES[name]
        if not path.is_file():
            env = os.environ.get("VIRTUALMLE_DATA_DIR")
            where = f"VIRTUALMLE_DATA_DIR={env}" if env else "the default; set VIRTUALMLE_DATA_DIR to change it"
            raise DataError(
                f"dataset {name!r}: file {DATASET_FILES[name]} not found in the data directory {root} "
                f"({where}); put {DATASET_FILES[name]} from {_SOURCES[name]} there, or pass a path"
            )
        return path, name
    path = Path(spec).expanduser()
    if not path.exists() and not path.is_absolute() and (root / path).exists():
        path = root / path
    if path.is_dir():
        inner = path / f"{path.name}.inter"
        if not inner.is_file():
            raise DataError(f"{path}: is a directory without {inner.name}; pass the data file itself")
        path = inner
    if not path.is_file():
        known = ", ".join(DATASET_FILES)
        raise DataError(f"dataset {spec!r} is neither a known name ({known}) nor an existing file ({path.absolute()})")
    stem = path.name
    for suffix in (".gz", ".txt", ".json", ".jsonl", ".csv", ".tsv", ".inter", ".dat"):
        stem = stem[: -len(suffix)] if stem.lower().endswith(suffix) else stem
    return path, stem


def _to_sequences(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """Per-user views into one flat array (no copies)."""
    return np.split(flat, offsets[1:-1])


def slice_data(data: SequenceData, n_users: int) -> SequenceData:
    """The first `n_users` users (file order) with items re-indexed 1..N in numeric order.

    Numeric order of the original ids keeps the slice a faithful miniature: a slice of all
    users is the data set itself.
    """
    if n_users < 1:
        raise DataError(f"slice_users must be at least 1, got {n_users}")
    seqs = data.sequences[:n_users]
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    uniq, inverse = np.unique(np.concatenate(seqs), return_inverse=True)
    items = inverse.astype(np.int64) + 1
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    times = None
    if data.timestamps is not None:
        times = data.timestamps[:n_users]
    meta = dict(data.meta, slice_users=n_users)
    user_ids = data.user_ids[:n_users] if data.user_ids is not None else None
    item_ids = data.item_ids[uniq - 1] if data.item_ids is not None else None
    return SequenceData(data.name, _to_sequences(items, offsets), int(uniq.size), times, data.source, meta,
                        user_ids, item_ids)


def load_dataset(
    spec: str,
    *,
    data_dir: Path | None = None,
    slice_users: int | None = None,
    fmt: str | None = None,
    columns: Mapping[str, str | None] | None = None,
    cache: bool = True,
) -> SequenceData:
    """Load a dataset by name or path, through the parse cache.

    Args:
        spec: a name (`beauty`, `baby`, `pet_supplies`, `sports`, `toys`, any case, or a file
            stem such as `Sports_and_Outdoors`) looked up in the data directory, or a path.
        data_dir: the data directory; default `$VIRTUALMLE_DATA_DIR` or
            `~/.cache/virtualmle/data`.
        slice_users: keep the first N users (file order) and re-index items 1..N.
        fmt: the file format (see `virtualmle.data.readers.FORMATS`); default from the name.
        columns: columns of a csv/tsv table: `{"user": ..., "item": ..., "timestamp": ...}`, each
            a header name or a 1-based position; `"timestamp": None` ignores the timestamps.
        cache: use and fill the parse cache (`$VIRTUALMLE_CACHE_DIR`).

    Returns:
        The sequences; `meta` holds `format`, `sha256`, `cache` (`hit`/`miss`/`off`) and the
        reader's facts (re-indexing, dropped users).

    Raises:
        DataError: a missing file, an unknown format, or a malformed file (one line naming the
            file, the line and the problem).
    """
    path, name = resolve_dataset(spec, data_dir)
    fmt = readers.normalize_format(fmt) if fmt else readers.detect_format(path)
    options = {"columns": dict(sorted(columns.items()))} if columns else {}
    parsed = None
    status = "off"
    digest = None
    if cache:
        try:
            digest = _cache.file_digest(path)
        except OSError as exc:
            raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from None
        key = _cache.cache_key(digest, fmt, options)
        parsed = _cache.load(key)
        status = "hit" if parsed is not None else "miss"
    if parsed is None:
        parsed = readers.read_file(path, fmt, columns=columns)
        if cache:
            _cache.store(key, parsed)
    meta = dict(parsed.meta, format=fmt, cache=status)
    if digest is not None:
        meta["sha256"] = digest
    times = _to_sequences(parsed.timestamps, parsed.offsets) if parsed.timestamps is not None else None
    data = SequenceData(name, _to_sequences(parsed.items, parsed.offsets), int(parsed.num_items), times, path, meta,
                        parsed.user_ids, parsed.item_ids)
    logger.debug("loaded %r (%s, cache %s)", data, fmt, status)
    if slice_users is not None:
        data = slice_data(data, slice_users)
    return data
