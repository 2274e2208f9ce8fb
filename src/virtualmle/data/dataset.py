"""The in-memory dataset every trial trains on, and `load_dataset`, which finds and reads one."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from virtualmle.errors import DataError

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
    """

    name: str
    sequences: list[np.ndarray]
    num_items: int
    timestamps: list[np.ndarray] | None = None
    source: Path | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))


def _read_sequences_simple(path: Path) -> list[np.ndarray]:
    """First version: `user item item ...` per line (replaced by virtualmle.data.readers)."""
    seqs: list[np.ndarray] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                items = np.array([int(p) for p in parts[1:]], dtype=np.int64)
            except ValueError:
                raise DataError(f"{path}:{lineno}: non-integer id") from None
            if len(items) < 3:
                raise DataError(f"{path}:{lineno}: user has {len(items)} items, need at least 3")
            seqs.append(items)
    if not seqs:
        raise DataError(f"{path}: empty file")
    return seqs


def load_dataset(
    spec: str,
    *,
    data_dir: Path | None = None,
    slice_users: int | None = None,
    fmt: str | None = None,
) -> SequenceData:
    """Load a dataset by name (`beauty`, ...) or path; see docs/data.md."""
    root = Path(data_dir) if data_dir is not None else globals()["data_dir"]()
    key = spec.lower()
    if key in DATASET_FILES:
        path, name = root / DATASET_FILES[key], key
    else:
        path, name = Path(spec).expanduser(), Path(spec).stem
    if not path.is_file():
        raise DataError(f"dataset file not found: {path} (set VIRTUALMLE_DATA_DIR)")
    seqs = _read_sequences_simple(path)
    if slice_users is not None:
        seqs = seqs[:slice_users]
        uniq, inv = np.unique(np.concatenate(seqs), return_inverse=True)
        lens = np.cumsum([len(s) for s in seqs])[:-1]
        seqs = [a.astype(np.int64) + 1 for a in np.split(inv, lens)]
        num_items = len(uniq)
    else:
        num_items = int(max(int(s.max()) for s in seqs))
    return SequenceData(name=name, sequences=seqs, num_items=num_items, source=path)
