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


def test_a_trial_the_budget_ended_can_be_the_choice_a_screen_included_and_a_pruned_one_cannot(tmp_path):
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from virtualmle.bench.results import read_run
    from virtualmle.search.stored import summarize

    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    dist = {"lr": FloatDistribution(1e-4, 1e-2, log=True)}
    rows = [(TrialState.COMPLETE, 0.02, None, {}),
            (TrialState.PRUNED, 0.05, "pruner", {}),
            (TrialState.PRUNED, 0.06, "screen", {}),
            (TrialState.PRUNED, 0.07, "budget", {"screen": {"round": 0, "epochs": 5}}),  # a screen the budget cut
            (TrialState.PRUNED, 0.08, "budget", {"test": {}}),  # no test metrics (a replayed table's)
            (TrialState.PRUNED, 0.025, "budget", {})]
    for n, (state, best, stopped_by, extra) in enumerate(rows):
        attrs = {"outcome": "complete" if state == TrialState.COMPLETE else "pruned", "seconds": 10.0,
                 "valid": {"ndcg@10": best}, "test": {"ndcg@10": best / 2}, **extra}
        if stopped_by:
            attrs["stopped_by"] = stopped_by
        # Optuna's value of a pruned trial is its last reported epoch, below its best one.
        study.add_trial(create_trial(state=state, value=best if state == TrialState.COMPLETE else best - 0.01,
                                     params={"lr": 1e-3 * (n + 1)}, distributions=dist, user_attrs=attrs,
                                     intermediate_values={1: best, 2: best - 0.01}))
    s = summarize(study, "random", "ndcg@10", len(rows))
    # A run cut at the deadline holds its best epoch's weights, a screen's too (its first epochs
    # are its full run's): trial 3 is the choice at its best validation (0.07, not its last
    # epoch's 0.06), as trial 5 (0.025, not 0.015) would be without it. The pruned, the screen that
    # ran its epochs and the untested are never chosen.
    assert s.best_number == 3 and s.best_value == 0.07 and s.best_test == {"ndcg@10": 0.035}
    run = read_run(study, "random", 0, tmp_path)
    assert run.values == [0.02, None, None, 0.07, None, 0.025]


def test_a_running_trial_spends_from_its_start_not_from_its_first_validation():
    import time

    budget = ComputeBudget(100.0)
    budget.finished = 40.0
    budget.start(7)
    budget.started[7] = time.monotonic() - 70.0  # in its first epoch for 70 s, nothing reported yet
    assert budget.spent >= 110.0 and budget.used_up()
    budget.epoch(7, 5.0)  # reported epoch seconds below the time it has run: the time counts
    assert budget.spent >= 110.0
    budget.finish(7)
    assert budget.spent == 40.0 and not budget.used_up()


def test_a_spent_budget_cuts_a_long_epoch_and_keeps_what_it_trained(tmp_path):
    import os
    from pathlib import Path

    from virtualmle.methods import get_method
    from virtualmle.search.loop import SearchOptions, run_search
    from virtualmle.search.space import load_space

    if not (Path(os.environ.get("VIRTUALMLE_DATA_DIR", "")) / "Beauty.txt").is_file():
        pytest.skip("Beauty.txt not in VIRTUALMLE_DATA_DIR")
    space = tmp_path / "space.yaml"
    # Validation only after epoch 300 (minutes of training): before, the budget saw nothing.
    space.write_text("model: sasrec\nfixed: {hidden: 16, blocks: 1, heads: 1, max_len: 20, negatives: 16, "
                     "batch_size: 64, max_epochs: 300, eval_every: 300, patience: 0}\n"
                     "params:\n  dropout: {type: categorical, choices: [0.1, 0.2], default: 0.2, grid: [0.1, 0.2]}\n")
    opts = SearchOptions(data="beauty", model="sasrec", space=load_space(path=space), slice_users=2000,
                         trials=5, time_budget=3.0, run_dir=tmp_path / "runs", device="cpu", seed=0,
                         keep_models=0, study_name="cut")
    storage = f"sqlite:///{tmp_path / 's.db'}"
    run_search(get_method("default", space=opts.space, seed=0), opts, storage=storage)
    (trial,) = optuna.load_study(study_name="cut", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["stopped_by"] == "budget"
    (log,) = trial.user_attrs["epochs"]  # the cut epoch, validated
    assert log["epoch"] < 300 and trial.user_attrs["valid"]["ndcg@10"] == log["valid"]["ndcg@10"]
    assert trial.user_attrs["test"] and trial.user_attrs["seconds"] < 120
