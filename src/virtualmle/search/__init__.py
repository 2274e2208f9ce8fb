"""Search: spaces (YAML), the subprocess trial executor, Optuna storage, the one search loop,
the classic methods (grid, random, tpe, default) and the HTML report.

Names are imported lazily so a trial worker (``python -m virtualmle.search.worker``) does not pay
for Optuna and SQLAlchemy at start-up.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS = {
    "Method": "method", "Proposal": "method", "TrialRecord": "method", "SearchContext": "method",
    "Outcome": "method", "GridSearch": "methods", "RandomSearch": "methods",
    "TPESearch": "methods", "DefaultControl": "methods",
    "SearchSpace": "space", "load_space": "space",
    "LocalExecutor": "executor", "TrialSpec": "executor", "TrialOutcome": "executor", "TrialExecutor": "executor",
    "open_storage": "storage", "default_study_name": "storage",
    "SearchOptions": "loop", "SearchSummary": "loop", "run_search": "loop",
    "write_report": "report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"virtualmle.search.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'virtualmle.search' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """This package, callable as the Python API's ``virtualmle.search(...)``.

    Importing any ``virtualmle.search.*`` module binds the package to the name ``search`` on
    ``virtualmle``, hiding a function of that name; so the package itself forwards a call to
    `virtualmle.api.search`.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from virtualmle.api import search

        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
