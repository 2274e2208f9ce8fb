"""The trial executor, with real worker subprocesses on a small slice of the real data."""

from __future__ import annotations

import os
import time

import pytest

from virtualmle.search.executor import LocalExecutor, TrialSpec
from virtualmle.search.method import Outcome
from virtualmle.search.worker import TEST_FAULT_ENV

TINY = {"model": "sasrec", "hidden": 16, "max_len": 20, "negatives": 8, "batch_size": 256, "max_epochs": 1}


def spec(tmp_path, number, **kw):
    config = {**TINY, **kw.pop("config", {})}
    return TrialSpec(number=number, data="beauty", config=config, trial_dir=str(tmp_path / f"t{number}"),
                     slice_users=kw.pop("slice_users", 500), device="cpu", **kw)


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_complete_trial_streams_epochs_and_result(tmp_path):
    ex = LocalExecutor(workers=1, device="cpu", threads=1)
    seen = []
    out = ex.run(spec(tmp_path, 0, config={"max_epochs": 2, "patience": 0}), on_epoch=lambda log: seen.append(log) or False)
    ex.shutdown()
    assert out.outcome is Outcome.COMPLETE, out.error
    assert [e["epoch"] for e in seen] == [1, 2] == [e["epoch"] for e in out.epochs]
    assert set(out.result["valid"]) >= {"hr@10", "ndcg@10"} and set(out.result["test"]) >= {"ndcg@10"}
    assert out.result["valid"] == out.result["epochs"][out.result["best_epoch"] - 1]["valid"]
    assert out.timings["threads"] == 1 and out.timings["device"] == "cpu"
    assert (tmp_path / "t0" / "spec.json").exists() and out.returncode == 0


def test_faults_are_classified_and_isolated(tmp_path, monkeypatch):
    # Each fault goes through the real subprocess and the real classification.
    monkeypatch.setenv(TEST_FAULT_ENV, "raise@0,nan@1,oom@2,exit@3,kill@4,hang@5")
    ex = LocalExecutor(workers=3, device="cpu", threads=1)
    futures = {n: ex.submit(spec(tmp_path, n, timeout=20 if n != 5 else 4)) for n in range(6)}
    outs = {n: f.result() for n, f in futures.items()}
    ex.shutdown()
    assert outs[0].outcome is Outcome.FAILED
    assert outs[0].error.startswith("RuntimeError: injected fault")
    assert "Traceback" in outs[0].traceback or "_inject" in outs[0].traceback
    assert outs[1].outcome is Outcome.DIVERGED and outs[1].error.startswith("DivergedError")
    assert outs[2].outcome is Outcome.OOM and "allocate" in outs[2].error  # torch's real allocator error
    assert outs[3].outcome is Outcome.FAILED and "exit code 3" in outs[3].error
    assert outs[4].outcome is Outcome.OOM and "SIGKILL" in outs[4].error
    assert outs[5].outcome is Outcome.TIMEOUT and "4 s" in outs[5].error
    assert 4 <= outs[5].seconds < 15


@pytest.mark.slow
def test_absurd_learning_rate_really_diverges(tmp_path):
    ex = LocalExecutor(workers=1, device="cpu", threads=1)
    out = ex.run(spec(tmp_path, 0, config={"lr": 1e6}))
    ex.shutdown()
    assert out.outcome is Outcome.DIVERGED, (out.outcome, out.error)
    assert "nan" in out.error or "inf" in out.error


def test_on_epoch_true_stops_the_trial_as_pruned(tmp_path):
    ex = LocalExecutor(workers=1, device="cpu", threads=1)
    out = ex.run(spec(tmp_path, 0, config={"max_epochs": 4, "patience": 0}, report_epochs=True),
                 on_epoch=lambda log: True)
    ex.shutdown()
    assert out.outcome is Outcome.PRUNED
    assert len(out.epochs) == 1 and out.result["stopped"] == "pruned"


def test_cancel_all_kills_the_process_group(tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_FAULT_ENV, "hang@*")
    ex = LocalExecutor(workers=2, device="cpu", threads=1)
    futures = [ex.submit(spec(tmp_path, n)) for n in range(2)]
    deadline = time.monotonic() + 30
    while len(ex._procs) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = [p.pid for p in ex._procs.values()]
    assert len(pids) == 2
    time.sleep(1.0)
    ex.cancel_all()
    outs = [f.result(timeout=20) for f in futures]
    ex.shutdown()
    assert [o.outcome for o in outs] == [Outcome.INTERRUPTED] * 2
    assert all(_gone(pid) for pid in pids)


def test_threads_and_gpus_are_divided_among_workers(tmp_path):
    # GPU ids are handed out round-robin through CUDA_VISIBLE_DEVICES (a CPU box just sees no GPU).
    ex = LocalExecutor(workers=2, device="auto", threads=1, gpus=["3", "5"])
    futures = [ex.submit(spec(tmp_path, n, dry_run=True)) for n in range(2)]
    outs = [f.result() for f in futures]
    ex.shutdown()
    assert all(o.outcome is Outcome.COMPLETE for o in outs)
    assert sorted(o.timings["gpu"] for o in outs) == ["3", "5"]
    assert all(o.timings["threads"] == 1 for o in outs)
    assert LocalExecutor(workers=4, device="cpu").threads == max(1, len(os.sched_getaffinity(0)) // 4)
