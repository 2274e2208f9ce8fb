"""VirtualMLE: a virtual ML engineer that tunes sequential recommenders.

Python API (loaded on first use, so ``import virtualmle`` stays light)::

    study, best = virtualmle.tune(data="beauty", model="sasrec", trials=10, storage="sqlite:///s.db")
    recs = virtualmle.load_model(best).recommend({"user": ["12", "7"]}, k=10)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("load_model", "search", "tune")


def __getattr__(name: str) -> Any:
    if name in _API:
        from virtualmle import api

        return getattr(api, name)
    raise AttributeError(f"module 'virtualmle' has no attribute {name!r}")


__all__ = ["__version__", "load_model", "search", "tune"]
