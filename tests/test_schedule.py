"""Training length and learning-rate schedule: eval_every, patience in validations, warm-up/decay."""

from __future__ import annotations

import pytest
import torch

from virtualmle.data import load_dataset
from virtualmle.data.dataset import data_dir
from virtualmle.errors import ConfigError
from virtualmle.training import TrainConfig, train
from virtualmle.training.schedule import lr_factor, make_scheduler

TINY = {"hidden": 16, "blocks": 1, "batch_size": 128, "negatives": 20}


@pytest.fixture(scope="module")
def beauty():
    if not (data_dir() / "Beauty.txt").is_file():
        pytest.skip("Beauty.txt not in VIRTUALMLE_DATA_DIR")
    return load_dataset("beauty", slice_users=500)


def test_lr_factor_warms_up_then_decays():
    # 10 warm-up steps of 100: rises to 1, then each schedule's shape, 0 at the end.
    warm = [lr_factor(s, 100, 10, "cosine") for s in range(11)]
    assert warm[0] == pytest.approx(1 / 11) and warm == sorted(warm) and warm[10] == 1.0
    assert [lr_factor(s, 100, 10, "constant") for s in (10, 50, 99)] == [1.0, 1.0, 1.0]
    assert lr_factor(55, 100, 10, "linear") == pytest.approx(0.5)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(32, 100, 10, "cosine") > lr_factor(32, 100, 10, "linear")  # cosine stays high longer
    assert lr_factor(100, 100, 10, "linear") == 0.0 and lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0)
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'"):
        lr_factor(0, 10, 0, "step")


def test_scheduler_drives_the_optimizer_and_none_without_schedule():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([w], lr=0.1)
    assert make_scheduler(opt, schedule="constant", warmup_steps=0, total_steps=10) is None
    sched = make_scheduler(opt, schedule="linear", warmup_steps=2, total_steps=10)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.1 * lr_factor(s, 10, 2, "linear") for s in range(10)])


def test_schedule_parameters_are_validated():
    with pytest.raises(ConfigError, match=r"parameter 'lr_schedule' = 'step' .*one of constant, linear, cosine"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ConfigError, match=r"warmup_epochs \(30\) must be at most max_epochs \(20\)"):
        TrainConfig(warmup_epochs=30)
    with pytest.raises(ConfigError, match=r"parameter 'eval_every' = 0"):
        TrainConfig(eval_every=0)
    defaults = TrainConfig()
    assert (defaults.lr_schedule, defaults.warmup_epochs, defaults.eval_every) == ("constant", 0.0, 1)


def test_eval_every_validates_every_k_epochs_and_patience_counts_validations(beauty):
    # lr so small the weights never move: no validation after the first improves.
    cfg = TrainConfig.for_model("sasrec", **TINY, lr=1e-12, max_epochs=20, eval_every=2, patience=2)
    seen = []
    result = train(beauty, cfg, on_epoch=lambda log: seen.append(log.epoch))
    assert seen == [2, 4, 6] and [e.epoch for e in result.epochs] == [2, 4, 6]
    assert result.stopped == "early_stop" and result.best_epoch == 2
    assert result.valid == result.epochs[0].valid
    # The last epoch is always validated, even off the k-grid.
    short = train(beauty, TrainConfig.for_model("sasrec", **TINY, max_epochs=3, eval_every=2, patience=0))
    assert [e.epoch for e in short.epochs] == [2, 3] and short.stopped == "max_epochs"


def test_warmup_and_decay_change_training_but_defaults_do_not(beauty):
    base = TrainConfig.for_model("sasrec", **TINY, lr=1e-2, max_epochs=3)
    plain = train(beauty, base)
    cosine = train(beauty, TrainConfig(**{**base.to_params(), "lr_schedule": "cosine", "warmup_epochs": 1}))
    explicit = train(beauty, TrainConfig(**{**base.to_params(), "lr_schedule": "constant", "warmup_epochs": 0}))
    assert [e.train_loss for e in explicit.epochs] == [e.train_loss for e in plain.epochs]
    # A warm-up epoch and a decaying rate take smaller steps: the loss falls less in 3 epochs.
    assert cosine.epochs[-1].train_loss > plain.epochs[-1].train_loss + 0.01
