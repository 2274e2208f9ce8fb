"""Training: validated trial configs, losses, length-bucketed batching, the trainer and the
full-ranking leave-one-out evaluation."""

from virtualmle.training.config import (
    METRICS,
    PARAM_NAMES,
    TrainConfig,
    coerce_params,
    default_params,
)
from virtualmle.training.evaluation import evaluate, metrics_from_ranks, rank_targets
from virtualmle.training.trainer import EpochLog, TrainResult, train

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
