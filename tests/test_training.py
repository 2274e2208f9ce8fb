"""TrainConfig validation, the protocol and metrics, losses and the trainer on a slice of Beauty."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from virtualmle.data import SequenceData, load_dataset
from virtualmle.errors import ConfigError, DivergedError
from virtualmle.models import ModelConfig, build_model
from virtualmle.training import (
    METRICS,
    TrainConfig,
    coerce_params,
    default_params,
    metrics_from_ranks,
    rank_targets,
    train,
)
from virtualmle.training.batching import TrainBatches
from virtualmle.training.evaluation import build_eval_batches, evaluate

SMALL = {"hidden": 32, "blocks": 1, "batch_size": 128, "max_epochs": 2, "negatives": 100}


@pytest.fixture(scope="module")
def beauty() -> SequenceData:
    data_dir = os.environ.get("VIRTUALMLE_DATA_DIR", "")
    if not (Path(data_dir) / "Beauty.txt").is_file():
        pytest.skip("Beauty.txt not in VIRTUALMLE_DATA_DIR")
    return load_dataset("beauty", slice_users=1000)


# --- configuration -------------------------------------------------------------------------


def test_defaults_follow_the_released_code():
    sas, hstu = TrainConfig.for_model("sasrec"), TrainConfig.for_model("hstu")
    assert (sas.hidden, sas.blocks, sas.heads, sas.dropout, sas.batch_size) == (128, 1, 1, 0.2, 256)
    assert (sas.lr, sas.weight_decay, sas.optimizer, sas.grad_clip) == (3e-4, 1e-5, "adam", 5.0)
    assert (sas.loss, sas.negatives, sas.patience, sas.max_len, sas.tied) == ("sampled_softmax", 500, 3, 50, False)
    assert sas.norm_first and sas.train_targets == "all" and sas.window == 0
    assert (hstu.dropout, hstu.attn_dropout, hstu.batch_size, hstu.weight_decay) == (0.5, 0.0, 128, 0.0)
    assert (hstu.optimizer, hstu.temperature, hstu.tied, hstu.l2_norm) == ("adamw", 0.05, True, True)
    assert (hstu.linear_dim, hstu.attn_dim) == (16, 16)
    # Missing parameters come from the chosen model, however the config is built.
    assert TrainConfig(model="hstu").to_params() == default_params("hstu")
    from virtualmle.training.config import PARAM_HELP, PARAM_NAMES

    assert set(PARAM_HELP) == set(PARAM_NAMES)  # --help explains every parameter


def test_bce_defaults_to_one_negative_unless_given():
    assert TrainConfig.for_model("sasrec", loss="bce").negatives == 1
    assert TrainConfig.for_model("sasrec", loss="bce", negatives=8).negatives == 8


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        ({"dropout": 1.5}, r"parameter 'dropout' = 1\.5 is not allowed: expected float, 0\.0 <= dropout < 1\.0"),
        ({"lr": -1.0}, r"parameter 'lr' = -1\.0 .*0\.0 < lr"),
        ({"loss": "hinge"}, r"parameter 'loss' = 'hinge' .*one of bce, sampled_softmax, softmax"),
        ({"colour": "red"}, r"unknown parameter 'colour' \(known: model, hidden"),
        ({"hidden": 30, "heads": 4}, r"hidden \(30\) must be divisible by heads \(4\)"),
        ({"window": 60}, r"window \(60\) must be 0 or at most max_len \(50\)"),
        ({"model": "gru"}, r"parameter 'model' = 'gru'.*one of sasrec, hstu"),
    ],
)
def test_bad_parameters_are_one_line_config_errors(params, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        TrainConfig(**params)
    assert "\n" not in str(info.value)


def test_coerce_params_types_values_by_parameter():
    got = coerce_params({"lr": "1e-3", "hidden": "64", "tied": "true", "loss": "bce", "norm_first": "0"})
    assert got == {"lr": 1e-3, "hidden": 64, "tied": True, "loss": "bce", "norm_first": False}
    with pytest.raises(ConfigError, match="unknown parameter 'hiden'"):
        coerce_params({"hiden": "64"})
    with pytest.raises(ConfigError, match="parameter 'hidden' = '6.5' is not allowed: expected int"):
        coerce_params({"hidden": "6.5"})
    with pytest.raises(ConfigError, match="parameter 'tied' = 'maybe'.*true or false"):
        coerce_params({"tied": "maybe"})


# --- protocol and metrics --------------------------------------------------------------------


def test_metrics_match_hand_computed_values():
    got = metrics_from_ranks(torch.tensor([0, 4, 5, 12, 30]))
    log2 = math.log2
    assert got["hr@5"] == pytest.approx(2 / 5)
    assert got["hr@10"] == pytest.approx(3 / 5)
    assert got["hr@20"] == pytest.approx(4 / 5)
    assert got["ndcg@5"] == pytest.approx((1 / log2(2) + 1 / log2(6)) / 5)
    assert got["ndcg@10"] == pytest.approx((1 / log2(2) + 1 / log2(6) + 1 / log2(7)) / 5)
    assert got["ndcg@20"] == pytest.approx((1 + 1 / log2(6) + 1 / log2(7) + 1 / log2(14)) / 5)
    assert got["mrr"] == pytest.approx((1 + 1 / 5 + 1 / 6 + 1 / 13 + 1 / 31) / 5)
    assert set(got) == set(METRICS)


def test_rank_excludes_history_and_padding_but_never_the_target():
    scores = torch.tensor([
        # col 0 is padding (huge score must not count)
        [9.0, 0.1, 0.5, 0.3, 0.9, 0.2],  # target 3 (0.3); history {4}: only item 2 beats it
        [9.0, 0.8, 0.4, 0.6, 0.1, 0.7],  # target 2 (0.4) is also in history {1, 2}: items 3, 5 beat it
        [9.0, 0.8, 0.4, 0.6, 0.1, 0.7],  # same row, no history: items 1, 3, 5 beat it
    ])
    rows = torch.tensor([0, 1, 1])
    items = torch.tensor([4, 1, 2])
    ranks = rank_targets(scores.clone(), torch.tensor([3, 2, 2]), rows, items)
    assert ranks.tolist() == [1, 2, 3]
    m = metrics_from_ranks(ranks)
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)) / 3)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)
    nan_row = torch.tensor([[0.0, float("nan"), 0.5, 0.1]])
    assert rank_targets(nan_row, torch.tensor([1]), torch.tensor([], dtype=torch.long),
                        torch.tensor([], dtype=torch.long)).tolist() == [3]


def test_splits_are_leave_one_out_and_evaluate_uses_them():
    # User 0's test target (2) is also in its history: under the release rule it is still ranked.
    data = SequenceData(name="toy", sequences=[np.array([1, 2, 3, 2]), np.array([4, 5, 6, 7, 8])], num_items=8)
    valid = build_eval_batches(data, "valid", max_len=50, mask="history_except_target")[0]
    test = build_eval_batches(data, "test", max_len=50, mask="history_except_target")[0]
    # Sorted by history length: user 0 first.
    assert valid.items.tolist() == [[0, 1, 2], [4, 5, 6]] and valid.targets.tolist() == [3, 7]
    assert test.items.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]] and test.targets.tolist() == [2, 8]
    train_b = TrainBatches(data, window=50, batch_size=8)
    assert train_b.items[:, -2:].tolist() == [[0, 1], [4, 5]] and train_b.targets[:, -2:].tolist() == [[0, 2], [5, 6]]

    torch.manual_seed(0)
    model = build_model("sasrec", ModelConfig(num_items=8, hidden=8, blocks=1)).eval()
    with torch.inference_mode():
        scores = model.score_all(model.encode(test.items)[:, -1])
    expected = []
    for row, hist, target in ((0, {1, 2, 3}, 2), (1, {4, 5, 6, 7}, 8)):
        others = [scores[row, i] for i in range(1, 9) if i not in hist and i != target]
        expected.append(sum(float(s > scores[row, target]) for s in others))
    assert evaluate(model, [test]) == metrics_from_ranks(torch.tensor(expected))


def test_history_is_truncated_to_max_len_but_fully_excluded():
    data = SequenceData(name="toy", sequences=[np.arange(1, 11)], num_items=12)
    test = build_eval_batches(data, "test", max_len=4)[0]
    assert test.items.tolist() == [[6, 7, 8, 9]]
    assert sorted(test.history_items.tolist()) == list(range(1, 10))


# --- trainer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "loss"),
    [("sasrec", "bce"), ("sasrec", "sampled_softmax"), ("sasrec", "softmax"), ("hstu", "sampled_softmax")],
)
def test_loss_falls_on_a_slice_of_beauty(beauty, model, loss):
    cfg = TrainConfig.for_model(model, loss=loss, **{**SMALL, "lr": 1e-3})
    result = train(beauty, cfg)
    losses = [e.train_loss for e in result.epochs]
    assert len(losses) == 2
    assert losses[-1] < losses[0], losses
    assert result.test["hr@20"] >= 0 and result.num_params > 0


def test_result_document_and_selection_use_validation_only(beauty):
    cfg = TrainConfig.for_model("sasrec", **{**SMALL, "max_epochs": 3, "patience": 0})
    result = train(beauty, cfg)
    doc = result.to_json()
    assert set(doc) >= {"config", "profile", "num_params", "epochs", "best_epoch", "valid", "test",
                        "seconds", "peak_memory_mb", "stopped"}
    assert doc["config"] == cfg.to_params() and doc["stopped"] == "max_epochs"
    assert doc["profile"]["users"] == 1000
    assert set(doc["valid"]) == set(doc["test"]) == set(METRICS)
    assert set(doc["epochs"][0]) == {"epoch", "train_loss", "valid", "seconds"}
    scores = [e["valid"]["ndcg@10"] for e in doc["epochs"]]
    assert doc["best_epoch"] == 1 + int(np.argmax(scores))
    assert doc["valid"] == doc["epochs"][doc["best_epoch"] - 1]["valid"]
    assert doc["peak_memory_mb"] > 0 and doc["seconds"] > 0


def test_same_seed_same_metrics_other_seed_other_metrics(beauty):
    cfg = TrainConfig.for_model("sasrec", **SMALL)
    a, b = train(beauty, cfg).to_json(), train(beauty, cfg).to_json()
    c = train(beauty, TrainConfig.for_model("sasrec", **{**SMALL, "seed": 1})).to_json()
    for key in ("valid", "test", "best_epoch"):
        assert a[key] == b[key]
    assert [e["train_loss"] for e in a["epochs"]] == [e["train_loss"] for e in b["epochs"]]
    assert [e["train_loss"] for e in a["epochs"]] != [e["train_loss"] for e in c["epochs"]]


def test_on_epoch_returning_true_prunes(beauty):
    seen = []

    def prune_after_two(log):
        seen.append(log.epoch)
        return log.epoch == 2

    cfg = TrainConfig.for_model("hstu", **{**SMALL, "max_epochs": 10, "patience": 0})
    result = train(beauty, cfg, on_epoch=prune_after_two)
    assert seen == [1, 2] and result.stopped == "pruned" and len(result.epochs) == 2
    assert set(result.test) == set(METRICS)


def test_a_run_its_method_gives_up_mid_epoch_does_not_validate_the_cut_epoch(beauty, tmp_path):
    # The stop file is there from the start: the first epoch ends after one batch. Given up (the
    # cost cap of step 10, seed 2: the cut epoch's validation took about 130 s), the run ends with
    # nothing validated; a budget stop keeps the run, so its cut epoch is validated and tested.
    cfg = TrainConfig.for_model("sasrec", **{**SMALL, "max_epochs": 3, "patience": 0})
    stop = tmp_path / "stop"
    stop.write_text("discard")
    given_up = train(beauty, cfg, stop_file=stop, discarded=lambda: True, partial=True)
    assert given_up.stopped == "pruned" and given_up.epochs == [] and given_up.valid == {}
    assert given_up.test == {} and given_up.discarded
    kept = train(beauty, cfg, stop_file=stop, discarded=lambda: False)
    assert kept.stopped == "pruned" and [e.epoch for e in kept.epochs] == [1]
    assert set(kept.valid) == set(METRICS) and set(kept.test) == set(METRICS) and not kept.discarded


def test_a_partial_run_scores_its_test_split_unless_it_ran_its_epochs_or_was_given_up(beauty):
    # A screen (the first epochs of a longer run) is compared, not kept: run to its cap, or given
    # up by its method, its test split is not scored; early stopping makes it a full run, and a stop
    # that keeps it (the compute budget) a run cut at the deadline: both are tested.
    cfg = TrainConfig.for_model("sasrec", **{**SMALL, "max_epochs": 2, "patience": 0})
    capped = train(beauty, cfg, partial=True)
    assert capped.stopped == "max_epochs" and capped.test == {} and capped.discarded
    assert set(capped.valid) == set(METRICS)
    given_up = train(beauty, cfg, partial=True, on_epoch=lambda log: True, discarded=lambda: True)
    assert given_up.stopped == "pruned" and given_up.test == {} and given_up.discarded
    cut = train(beauty, cfg, partial=True, on_epoch=lambda log: True, discarded=lambda: False)
    assert cut.stopped == "pruned" and set(cut.test) == set(METRICS) and not cut.discarded
    # lr 1e-12 leaves the weights as they were: the second validation does not improve.
    still = TrainConfig.for_model("sasrec", **{**SMALL, "max_epochs": 5, "patience": 1, "lr": 1e-12})
    stopped = train(beauty, still, partial=True)
    assert stopped.stopped == "early_stop" and set(stopped.test) == set(METRICS) and not stopped.discarded


def test_absurd_learning_rate_raises_diverged(beauty):
    cfg = TrainConfig.for_model("sasrec", **{**SMALL, "lr": 1e6})
    with pytest.raises(DivergedError, match=r"training diverged: the loss became nan at epoch 1"):
        train(beauty, cfg)


def test_last_position_supervision_and_window(beauty):
    cfg = TrainConfig.for_model("sasrec", **{**SMALL, "train_targets": "last", "window": 10, "max_epochs": 1})
    batches = TrainBatches(beauty, cfg.train_window, cfg.batch_size, last_only=True)
    assert batches.items.shape[1] == 10
    assert int((batches.targets != 0).sum()) == batches.num_samples  # one target per user
    assert math.isfinite(train(beauty, cfg).epochs[0].train_loss)


def test_batches_are_padded_to_their_own_longest_sequence(beauty):
    batches = TrainBatches(beauty, window=50, batch_size=64)
    widths = []
    for items, _, targets in batches.epoch(np.random.default_rng(0)):
        assert items.shape == targets.shape
        assert bool((items[:, 0] != 0).any())  # no all-padding leading column
        widths.append(items.shape[1])
    assert len(widths) == len(batches) and min(widths) < 50


def test_hstu_trains_with_timestamps(beauty):
    # The Beauty files carry no timestamps; give each user irregular, increasing ones.
    rng = np.random.default_rng(0)
    stamps = [np.cumsum(rng.integers(3600, 90 * 86400, len(s))) for s in beauty.sequences]
    timed = SequenceData(name="beauty-timed", sequences=beauty.sequences, num_items=beauty.num_items,
                         timestamps=stamps)
    cfg = TrainConfig.for_model("hstu", **{**SMALL, "max_epochs": 1})
    with_time, without = train(timed, cfg), train(beauty, cfg)
    assert math.isfinite(with_time.epochs[0].train_loss)
    assert with_time.valid != without.valid  # the time bias takes part
