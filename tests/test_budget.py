"""Budgets in compute time and the pruner choice (search/budget.py)."""

from __future__ import annotations

import optuna
import pytest

from virtualmle.errors import ConfigError
from virtualmle.search.budget import ComputeBudget, format_duration, make_pruner, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("45m", 2700.0), ("2h", 7200.0),
                                               ("1h30m", 5400.0), ("1.5h", 5400.0), ("1d", 86400.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "45 minutes", "m", "2x", "inf", "nan"])
def test_bad_durations_name_the_value(text):
    with pytest.raises(ConfigError, match="--budget"):
        parse_duration(text)


def test_format_duration():
    assert [format_duration(s) for s in (5, 65, 3600, 3725)] == ["5s", "1m05s", "1h00m", "1h02m"]


@pytest.mark.parametrize(("kind", "cls"), [(None, optuna.pruners.NopPruner), ("median", optuna.pruners.MedianPruner),
                                           (True, optuna.pruners.MedianPruner),
                                           ("sha", optuna.pruners.SuccessiveHalvingPruner),
                                           ("hyperband", optuna.pruners.HyperbandPruner)])
def test_pruners(kind, cls):
    assert type(make_pruner(kind, 20)) is cls


def test_unknown_pruner():
    with pytest.raises(ConfigError, match="asha"):
        make_pruner("asha", None)


def test_compute_budget_counts_finished_and_running_trials():
    budget = ComputeBudget(100.0)
    budget.finished = 60.0
    budget.epoch(3, 25.0)
    assert budget.spent == 85.0 and not budget.used_up() and budget.left == 15.0
    budget.epoch(3, 15.0)
    assert budget.used_up()
    assert not ComputeBudget(None).used_up() and ComputeBudget(None).left is None
