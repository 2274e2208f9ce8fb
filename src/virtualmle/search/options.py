"""What a search is asked (`SearchOptions`) and what it hands back (`SearchSummary`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from virtualmle.search.space import SearchSpace

DEFAULT_TRIALS = 30  # the budget of a study when none is given (CLI and Python API alike)


@dataclass
class SearchOptions:
    """What to search: dataset, backbone, budget, fidelity and where to record it.

    Attributes:
        data: dataset spec (name or path).
        model: backbone, ``sasrec`` or ``hstu``.
        trials: budget: trials of the study that count (interrupted ones do not).
        seed: study seed (samplers, grid order, training seed unless a method sets ``seed``).
        metric: validation metric maximised.
        study_name: default ``<dataset>-<model>-<method>-s<seed>``.
        space: the search space; default the shipped one of ``model``.
        max_epochs / slice_users: fidelity controls applied to every trial.
        timeout_per_trial: wall-clock seconds per trial (None: no limit).
        prune: epoch-level pruning on validation: ``median``, ``sha`` (successive halving) or
            ``hyperband`` (Optuna's pruners; None: none; True: median).
        time_budget: compute seconds the study may spend (None: the trial budget alone); see
            `search.budget`. When spent, no trial starts and running ones stop at their next
            epoch (recorded as pruned with ``stopped_by: budget``, their best epoch kept).
        run_dir: per-trial files (spec, worker log); default ``runs/<study>``.
        data_dir: dataset directory override.
        device: ``auto``, ``cpu`` or ``cuda``.
        workers: trials at once.
        fixed: extra parameters held constant in every trial (e.g. ``{"patience": 2}``).
        progress: show a rich progress display.
        data_options: how to read the data file (`load_dataset`'s ``fmt``, ``columns``).
        keep_models: models kept in the run directory: the best as ``best_model``, the next
            ones in ``models/`` (0: trials save no model); see `search.model_keeper`.
    """

    data: str
    model: str = "sasrec"
    trials: int = DEFAULT_TRIALS
    seed: int = 0
    metric: str = "ndcg@10"
    study_name: str | None = None
    space: SearchSpace | None = None
    max_epochs: int | None = None
    slice_users: int | None = None
    timeout_per_trial: float | None = None
    prune: str | bool | None = None
    time_budget: float | None = None
    run_dir: Path | None = None
    data_dir: str | None = None
    device: str = "auto"
    workers: int = 1
    fixed: dict[str, Any] = field(default_factory=dict)
    progress: bool = False
    data_options: dict[str, Any] = field(default_factory=dict)
    keep_models: int = 1


@dataclass
class SearchSummary:
    """The end of a search: the best configuration on validation and what the search cost.

    ``best_test`` is read from the best-on-validation trial only, for reporting.
    """

    study_name: str
    method: str
    metric: str
    budget: int
    trials_used: int
    outcomes: dict[str, int]
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_valid: dict[str, float]
    best_test: dict[str, float]
    compute_seconds: float
    wall_seconds: float
    exhausted: bool = False  # the method had nothing left to propose (grid done)
    best_model: str | None = None  # the best trial's saved model directory
    time_budget: float | None = None  # compute seconds allowed (None: trials only)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
