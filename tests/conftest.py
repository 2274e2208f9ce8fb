"""One place owns the test environment: where the real datasets are.

`VIRTUALMLE_DATA_DIR` from the environment wins (the Makefile sets it); otherwise the shared data
folder beside the checkout (`../shared/data`), found relative to this file, never a machine path.
Test modules read `os.environ["VIRTUALMLE_DATA_DIR"]`; a test whose file is absent skips itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_BESIDE_CHECKOUT = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("VIRTUALMLE_DATA_DIR") and _BESIDE_CHECKOUT.is_dir():
        os.environ["VIRTUALMLE_DATA_DIR"] = str(_BESIDE_CHECKOUT)


def beauty_slice(users: int):
    """The first ``users`` users of Beauty, or a skip when the file is not in the data folder."""
    from virtualmle.data import load_dataset

    if not (Path(os.environ.get("VIRTUALMLE_DATA_DIR", "")) / "Beauty.txt").is_file():
        pytest.skip("Beauty.txt not in VIRTUALMLE_DATA_DIR")
    return load_dataset("beauty", slice_users=users)
