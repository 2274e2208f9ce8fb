"""Issue 15, sections 1-2: nothing twice, nothing lost, and one budget across processes.

Real `virtualmle` processes on one real SQLite study: four searches at once, and kill -9 in
the observe step (after the trial's metrics are stored, before the trial is told).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from virtualmle.search.testing import TINY_FIXED, TINY_SLICE_USERS, write_tiny_space


@pytest.fixture(autouse=True)
def _cwd(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def search_argv(space: Path, db: Path, method: str, trials: int, study: str, *extra: str) -> list[str]:
    sets = [x for k, v in TINY_FIXED.items() for x in ("--set", f"{k}={v}")]
    return [sys.executable, "-m", "virtualmle", "search", "--method", method, "--data", "beauty",
            "--model", "sasrec", "--trials", str(trials), "--space", str(space), "--storage", f"sqlite:///{db}",
            "--study", study, "--slice-users", str(TINY_SLICE_USERS), "--max-epochs", "1", "--quiet",
            "--device", "cpu", *sets, *extra]


def test_four_processes_on_one_study_run_exactly_the_budget(tmp_path):
    space, db = write_tiny_space(tmp_path), tmp_path / "same.db"
    argv = search_argv(space, db, "random", 6, "same")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    try:
        outs = [p.communicate(timeout=420) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    trials = optuna.load_study(study_name="same", storage=f"sqlite:///{db}").get_trials(deepcopy=False)
    counted = [t for t in trials if t.state.is_finished() and not t.user_attrs.get("free")]
    assert len(counted) == 6  # the budget, exactly, across the four processes
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    params = [tuple(sorted(t.params.items())) for t in counted]
    assert len(set(params)) == 6  # no draw ran twice
    owners = {t.user_attrs["owner"]["pid"] for t in counted}
    assert len(owners) >= 2  # the processes really shared the work
    used = [int(re.search(r"same: (\d+)/6 trials", out).group(1)) for out, _ in outs]
    assert max(used) == 6 and all(u <= 6 for u in used), used  # the study's count, never over the budget


# ---- section 1: killed in the observe step -----------------------------------------------------

AGENT_SPACE = """\
model: sasrec
description: tiny agent space
fixed: {max_len: 20, batch_size: 256, patience: 1, heads: 1}
params:
  hidden:  {type: categorical, choices: [16, 24, 32], default: 16, grid: [16, 24, 32]}
  dropout: {type: float, low: 0.0, high: 0.5, default: 0.2, grid: [0.1, 0.2, 0.3]}
  lr:      {type: float, low: 1.0e-3, high: 1.0e-2, log: true, default: 3.0e-3, grid: [1.0e-3, 1.0e-2]}
"""


def tune_argv(tmp: Path, llm: str, trials: int = 3, study: str = "obs") -> list[str]:
    return [sys.executable, "-m", "virtualmle", "tune", "--data", "beauty", "--model", "sasrec",
            "--trials", str(trials), "--space", str(tmp / "agent.yaml"), "--storage", f"sqlite:///{tmp / 's.db'}",
            "--study", study, "--memory", str(tmp / "memory"), "--run-dir", str(tmp / "run"),
            "--slice-users", str(TINY_SLICE_USERS), "--max-epochs", "1", "--device", "cpu", "--quiet",
            "--transfer", "none", "--llm", llm]


def _study_trials(tmp: Path, study: str = "obs") -> list[optuna.trial.FrozenTrial]:
    trials = optuna.load_study(study_name=study, storage=f"sqlite:///{tmp / 's.db'}").get_trials(deepcopy=False)
    return sorted(trials, key=lambda t: t.number)


def _insights(tmp: Path) -> dict:
    import json

    return json.loads(next((tmp / "memory" / "insights").glob("*.json")).read_text())


def test_kill_9_in_observe_step_resumes_without_retraining_and_counts_evidence_once(tmp_path):
    from fake_openai import fake_openai

    (tmp_path / "agent.yaml").write_text(AGENT_SPACE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with fake_openai() as server:
        server.behaviour.delay = {"Reflection": 120.0}  # holds the study inside trial 1's observe step
        argv = tune_argv(tmp_path, server.spec(retries=0))
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        stored = None
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and stored is None:
                time.sleep(0.2)
                assert proc.poll() is None, proc.stderr.read()
                try:
                    trials = _study_trials(tmp_path)
                except Exception:  # the study is not created yet
                    continue
                asked = any((r["body"].get("response_format") or {}).get("json_schema", {}).get("name") == "Reflection"
                            for r in server.requests)
                one = next((t for t in trials if t.number == 1), None)
                if asked and one is not None and one.state == TrialState.RUNNING and "valid" in one.user_attrs:
                    stored = (dict(one.user_attrs["valid"]), one.datetime_start)
            assert stored is not None, "trial 1 never reached its observe step"
            os.kill(proc.pid, signal.SIGKILL)  # metrics stored, trial not told yet
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server.behaviour.delay = {}
        resumed = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        trials = _study_trials(tmp_path)
        assert [(t.number, t.state) for t in trials] == [(n, TrialState.COMPLETE) for n in range(3)]
        one = trials[1]
        assert (one.user_attrs["valid"], one.datetime_start) == stored  # observed from storage, not retrained
        assert not any("rerun_of" in t.user_attrs for t in trials)
        assert "reflection" in one.user_attrs and "insight_ops" in one.user_attrs  # the observe step was redone
        before = _insights(tmp_path)

        # A kill after the memory write and before the trial was told leaves this state: trial 2
        # RUNNING under a dead process, its memory operations already in the bank. (Set on the
        # real SQLite file, as the kill would have left it.) Resuming replays trial 2's observe step.
        import json
        import sqlite3

        stale = tmp_path / "memory" / "insights" / ".beauty__sasrec.json.dead1234.tmp"
        stale.write_text("{half")
        con = sqlite3.connect(tmp_path / "s.db")
        with con:
            tid = con.execute("select trial_id from trials where number = 2").fetchone()[0]
            con.execute("update trials set state = 'RUNNING', datetime_complete = null where trial_id = ?", (tid,))
            con.execute("update trial_user_attributes set value_json = ? where trial_id = ? and key = 'owner'",
                        (json.dumps({"host": os.uname().nodename, "pid": 999999, "start": "1"}), tid))
            con.execute("delete from trial_values where trial_id = ?", (tid,))
        con.close()
        again = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-2000:]
    trials = _study_trials(tmp_path)
    assert [(t.number, t.state) for t in trials] == [(n, TrialState.COMPLETE) for n in range(3)]
    after = _insights(tmp_path)
    assert after["insights"] == before["insights"]  # the same evidence is never counted twice
    assert not stale.exists()  # a temp file a killed writer left is cleaned up
