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
