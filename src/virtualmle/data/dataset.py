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
