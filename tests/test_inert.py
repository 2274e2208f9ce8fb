"""Inert parameters: each rule of `virtualmle.inert` trains both values for real and gets the same
model; a parameter the rule calls active changes it. The agent's duplicate check then treats a
no-op change as already tried, so it never spends a trial on one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from virtualmle.agent.space_view import Axis, SpaceView
from virtualmle.data import SequenceData, load_dataset
from virtualmle.inert import inert_params
from virtualmle.training import TrainConfig, train

BASE = {"hidden": 16, "blocks": 1, "batch_size": 256, "max_epochs": 1, "patience": 0, "lr": 1e-3,
        "negatives": 50}


@pytest.fixture(scope="module")
def beauty() -> SequenceData:
    data_dir = os.environ.get("VIRTUALMLE_DATA_DIR", "")
    if not (Path(data_dir) / "Beauty.txt").is_file():
        pytest.skip("Beauty.txt not in VIRTUALMLE_DATA_DIR")
    return load_dataset("beauty", slice_users=300)


def _metrics(data: SequenceData, **params) -> dict[str, float]:
    result = train(data, TrainConfig.for_model("sasrec", **{**BASE, **params}))
    return {**{f"valid_{k}": v for k, v in result.valid.items()}, "loss": result.epochs[-1].train_loss}


# (the configuration, the parameter the rule calls inert there, two values of it)
INERT_CASES = [
    ({"loss": "bce"}, "neg_sampler", ("uniform", "popularity")),
    ({"loss": "softmax"}, "negatives", (20, 80)),
    ({"loss": "sampled_softmax", "neg_sampler": "in_batch"}, "negatives", (20, 80)),
    ({"loss": "sampled_softmax", "neg_sampler": "uniform"}, "logq", (False, True)),
    ({"loss": "sampled_softmax"}, "gbce_t", (0.2, 0.9)),
    ({"pooling": "last"}, "pool_k", (2, 5)),
    ({"prior_cooc": 0.0, "prior_transition": 1.0}, "prior_window", (1, 4)),
    ({"prior_cooc": 0.0, "prior_transition": 1.0}, "prior_norm", ("none", "sqrt")),
]
# The same parameters where the rule calls them active: the model changes.
ACTIVE_CASES = [
    ({"loss": "sampled_softmax"}, "neg_sampler", ("uniform", "popularity")),
    ({"loss": "sampled_softmax"}, "negatives", (20, 80)),
    ({"loss": "sampled_softmax", "neg_sampler": "popularity"}, "logq", (False, True)),
    ({"loss": "gbce"}, "gbce_t", (0.2, 0.9)),
    ({"pooling": "recency_mean"}, "pool_k", (2, 5)),
    ({"prior_cooc": 1.0}, "prior_window", (1, 4)),
]


@pytest.mark.parametrize(("config", "param", "values"), INERT_CASES, ids=lambda x: str(x))
def test_an_inert_parameter_trains_the_same_model(beauty, config, param, values):
    assert param in inert_params(config)
    a, b = (_metrics(beauty, **config, **{param: v}) for v in values)
    assert a == b


@pytest.mark.parametrize(("config", "param", "values"), ACTIVE_CASES, ids=lambda x: str(x))
def test_the_same_parameter_where_it_is_read_changes_the_model(beauty, config, param, values):
    assert param not in inert_params(config)
    a, b = (_metrics(beauty, **config, **{param: v}) for v in values)
    assert a != b


def test_a_value_the_configuration_does_not_give_is_never_assumed():
    assert inert_params({}) == frozenset()
    assert inert_params({"pooling": "recency_mean", "prior_cooc": 0.3}) == frozenset()
    assert "pool_k" not in inert_params({"loss": "softmax"})


def test_the_agent_counts_a_change_of_an_inert_parameter_as_already_tried():
    view = SpaceView(axes={
        "loss": Axis("loss", "categorical", ("bce", "sampled_softmax", "softmax")),
        "negatives": Axis("negatives", "int", (20, 80)),
        "pool_k": Axis("pool_k", "int", (2, 5)),
    }, fixed={"pooling": "last"})
    softmax = {"loss": "softmax", "negatives": 20, "pool_k": 2}
    assert view.key(softmax) == view.key({**softmax, "negatives": 80}) == view.key({**softmax, "pool_k": 5})
    sampled = {**softmax, "loss": "sampled_softmax"}
    assert view.key(sampled) != view.key({**sampled, "negatives": 80})
    assert view.key(sampled) != view.key(softmax)
