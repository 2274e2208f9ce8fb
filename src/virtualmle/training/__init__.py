"""Training: validated trial configs, losses, length-bucketed batching, the trainer and the
full-ranking leave-one-out evaluation.

The configuration names load without torch (the CLI validates `--set` before paying for the
torch import); the trainer and evaluation names import torch on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from virtualmle.training.config import (
    METRICS,
    PARAM_NAMES,
    TrainConfig,
    default_params,
)
from virtualmle.training.params_text import coerce_params

if TYPE_CHECKING:
    from virtualmle.training.evaluation import evaluate, metrics_from_ranks, rank_targets
    from virtualmle.training.trainer import EpochLog, TrainResult, train

_LAZY = {
    "evaluate": "virtualmle.training.evaluation",
    "metrics_from_ranks": "virtualmle.training.evaluation",
    "rank_targets": "virtualmle.training.evaluation",
    "EpochLog": "virtualmle.training.trainer",
    "TrainResult": "virtualmle.training.trainer",
    "train": "virtualmle.training.trainer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METRICS",
    "PARAM_NAMES",
    "EpochLog",
    "TrainConfig",
    "TrainResult",
    "coerce_params",
    "default_params",
    "evaluate",
    "metrics_from_ranks",
    "rank_targets",
    "train",
]
