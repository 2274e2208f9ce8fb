"""Resumable training (training/checkpoint.py): a run continued from its checkpoint is the same
run, bit for bit; a checkpoint of another configuration or dataset is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import beauty_slice

from virtualmle.data import SequenceData, load_dataset
from virtualmle.errors import ConfigError
from virtualmle.training import TrainConfig, train
from virtualmle.training import checkpoint as ckpt
from virtualmle.training.checkpoint import CheckpointError
from virtualmle.training.trainer import setup_run

SMALL = {"hidden": 32, "blocks": 1, "batch_size": 128, "negatives": 50, "patience": 0}


@pytest.fixture(scope="module")
def beauty() -> SequenceData:
    return beauty_slice(600)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


COSINE = {"lr_schedule": "cosine", "warmup_epochs": 1, "dropout": 0.3}


@pytest.mark.parametrize("extra, first_part", [({}, "screen"), (COSINE, "kill"), (COSINE, "screen")])
def test_a_resumed_run_is_the_uninterrupted_run(beauty, tmp_path, extra, first_part):
    straight = train(beauty, TrainConfig.for_model("sasrec", max_epochs=4, **SMALL, **extra))
    path = tmp_path / "run.ckpt"
    if first_part == "screen":
        # Screened at 2 epochs, then promoted to 4. A decaying schedule keeps the full run's span
        # (schedule_epochs), so the screen's 2 epochs are the full run's first 2.
        span = {"schedule_epochs": 4} if "lr_schedule" in extra else {}
        first = train(beauty, TrainConfig.for_model("sasrec", max_epochs=2, **SMALL, **extra, **span),
                      checkpoint=path)
        assert first.resumed_epoch == 0 and len(first.epochs) == 2
    else:
        # A run killed after epoch 2 (subprocess, SIGKILL).
        _train_and_kill_after(beauty_epochs=2, path=path, extra=extra)
    assert path.is_file()
    resumed = train(beauty, TrainConfig.for_model("sasrec", max_epochs=4, **SMALL, **extra), checkpoint=path)
    assert resumed.resumed_epoch == 2
    assert [e.epoch for e in resumed.epochs] == [1, 2, 3, 4]
    assert [e.train_loss for e in resumed.epochs] == [e.train_loss for e in straight.epochs]
    assert resumed.valid == straight.valid and resumed.test == straight.test
    assert resumed.best_epoch == straight.best_epoch
    assert _same_weights(resumed.model, straight.model)


def _train_and_kill_after(beauty_epochs: int, path: Path, extra: dict) -> None:
    """Train in a child process that SIGKILLs itself right after the epoch-`beauty_epochs` checkpoint."""
    code = f"""
import os, signal
from virtualmle.data import load_dataset
from virtualmle.training import TrainConfig, train
data = load_dataset("beauty", slice_users=600)
def stop(log):
    if log.epoch == {beauty_epochs}:
        os.kill(os.getpid(), signal.SIGKILL)
train(data, TrainConfig.for_model("sasrec", max_epochs=4, **{SMALL!r}, **{extra!r}),
      checkpoint={str(path)!r}, on_epoch=stop)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]


def test_a_finished_run_resumed_does_not_train_again(beauty, tmp_path):
    path = tmp_path / "run.ckpt"
    config = TrainConfig.for_model("sasrec", max_epochs=3, **SMALL)
    first = train(beauty, config, checkpoint=path)
    again = train(beauty, config, checkpoint=path)
    assert again.resumed_epoch == 3 and [e.epoch for e in again.epochs] == [1, 2, 3]
    assert again.test == first.test
    assert again.seconds < first.seconds


def test_a_checkpoint_of_another_configuration_or_dataset_is_refused(beauty, tmp_path):
    path = tmp_path / "run.ckpt"
    train(beauty, TrainConfig.for_model("sasrec", max_epochs=1, **SMALL), checkpoint=path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="differs in lr"):
        train(beauty, TrainConfig.for_model("sasrec", max_epochs=2, lr=1e-3, **SMALL), checkpoint=path)
    other = load_dataset("beauty", slice_users=500)
    with pytest.raises(CheckpointError, match="other data"):
        train(other, TrainConfig.for_model("sasrec", max_epochs=2, **SMALL), checkpoint=path)
    # A decaying schedule's length is part of the trajectory.
    cos = {**SMALL, "lr_schedule": "cosine"}
    cpath = tmp_path / "cos.ckpt"
    train(beauty, TrainConfig.for_model("sasrec", max_epochs=1, **cos), checkpoint=cpath)
    with pytest.raises(CheckpointError, match="differs in schedule_horizon.*span .schedule_epochs, else max_epochs"):
        train(beauty, TrainConfig.for_model("sasrec", max_epochs=2, **cos), checkpoint=cpath)
    assert path.read_bytes() == before  # a refused resume leaves the checkpoint as it was
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        train(beauty, TrainConfig.for_model("sasrec", max_epochs=1, **SMALL), checkpoint=garbage)


def test_a_checkpoint_from_before_a_new_parameter_resumes_with_its_default(beauty, tmp_path):
    # Written by a version without `precision`: it ran as the default (fp32) then.
    path = tmp_path / "run.ckpt"
    config = TrainConfig.for_model("sasrec", max_epochs=1, **SMALL)
    train(beauty, config, checkpoint=path)
    blob = torch.load(path, weights_only=True)
    del blob["config"]["precision"]
    torch.save(blob, path)
    longer = TrainConfig.for_model("sasrec", max_epochs=2, **SMALL)
    assert train(beauty, longer, checkpoint=path).resumed_epoch == 1
    with pytest.raises(CheckpointError, match="differs in precision"):
        train(beauty, TrainConfig.for_model("sasrec", max_epochs=2, precision="bf16", **SMALL), checkpoint=path)


def test_a_decaying_schedule_binds_its_span_not_max_epochs(beauty, tmp_path):
    path = tmp_path / "run.ckpt"
    # A 2-epoch cosine run decays to 0 at epoch 2: it is not the start of a 4-epoch run.
    train(beauty, TrainConfig.for_model("sasrec", max_epochs=2, **SMALL, **COSINE), checkpoint=path)
    with pytest.raises(CheckpointError, match="differs in schedule_horizon"):
        train(beauty, TrainConfig.for_model("sasrec", max_epochs=4, **SMALL, **COSINE), checkpoint=path)
    # Written before schedule_horizon existed (max_epochs bound the span): still read as such.
    blob = torch.load(path, weights_only=True)
    blob["config"]["max_epochs"] = blob["config"].pop("schedule_horizon")
    torch.save(blob, path)
    again = train(beauty, TrainConfig.for_model("sasrec", max_epochs=2, **SMALL, **COSINE), checkpoint=path)
    assert again.resumed_epoch == 2
    with pytest.raises(ConfigError, match="schedule_epochs .3. must be 0 or at least max_epochs .4."):
        TrainConfig.for_model("sasrec", max_epochs=4, schedule_epochs=3)



def test_min_delta_stops_a_creeping_curve_and_keeps_its_best_epoch(beauty, tmp_path):
    # lr 0.003 on 600 users: validation rises by large steps, then creeps (seeded, deterministic).
    creep = {"hidden": 32, "blocks": 1, "heads": 1, "batch_size": 128, "negatives": 50, "max_len": 20,
             "dropout": 0.0, "lr": 0.003, "max_epochs": 10}
    straight = train(beauty, TrainConfig.for_model("sasrec", **creep, patience=3))
    curve = [e.score for e in straight.epochs]
    # With min_delta 0 any gain resets patience 3, so it runs its 10 epochs.
    assert straight.stopped == "max_epochs" and len(curve) == 10, curve
    strict = TrainConfig.for_model("sasrec", **creep, patience=3, min_delta=0.15)
    cut = train(beauty, strict)
    # Gains under 15% do not reset patience: it stops early, on the same curve so far ...
    assert cut.stopped == "early_stop" and len(cut.epochs) < 10
    assert [e.score for e in cut.epochs] == curve[:len(cut.epochs)]
    # ... yet its weights are its best validation's, a gain that did not reset patience: the best
    # epoch is fewer than 3 validations before the stop.
    assert cut.best_epoch == 1 + curve.index(max(curve[:len(cut.epochs)]))
    assert len(cut.epochs) - cut.best_epoch < 3 and cut.valid == cut.epochs[cut.best_epoch - 1].valid
    # A screen written with min_delta 0 (5 epochs) and promoted with min_delta 0.15 is the same
    # run (on this curve its gains up to epoch 5 are all over 15%); so is one whose checkpoint
    # predates min_delta (it resumes from its best score).
    for old in (False, True):
        path = tmp_path / f"screen{old}.ckpt"
        train(beauty, TrainConfig.for_model("sasrec", **{**creep, "max_epochs": 5}, patience=3), checkpoint=path)
        if old:
            blob = torch.load(path, weights_only=True)
            del blob["ref_score"]
            torch.save(blob, path)
        promoted = train(beauty, strict, checkpoint=path)
        assert promoted.resumed_epoch == 5 and promoted.stopped == "early_stop"
        assert [e.score for e in promoted.epochs] == [e.score for e in cut.epochs]
        assert promoted.best_epoch == cut.best_epoch and promoted.test == cut.test
    # The checkpoint keeps the score that last reset patience, apart from the best: after a best
    # that did not reset it, the two differ, and a resume reads the former back.
    path = tmp_path / "strict.ckpt"
    train(beauty, TrainConfig.for_model("sasrec", **{**creep, "max_epochs": cut.best_epoch}, patience=0,
                                        min_delta=0.15), checkpoint=path)
    blob = torch.load(path, weights_only=True)
    resets = [e for e in cut.epochs if e.epoch < cut.best_epoch]
    assert blob["best_score"] == curve[cut.best_epoch - 1] > blob["ref_score"]
    assert blob["ref_score"] in [e.score for e in resets] and blob["since_best"] >= 1
    run = setup_run(beauty, strict)
    state = ckpt.restore(blob, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler, rng=run.rng,
                         gen=run.gen)
    assert (state.ref_score, state.best_score, state.since_best) == (blob["ref_score"], blob["best_score"],
                                                                    blob["since_best"])
