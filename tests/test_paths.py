"""Issue 15, section 5 (and the memory-directory check of section 1): study names never become
paths, and a run or memory directory that cannot be written stops the command with one line,
exit 2, before the first trial. Real `virtualmle` processes on real SQLite storage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from virtualmle.search.testing import TINY_FIXED, TINY_SLICE_USERS, write_tiny_space


def _read_only_dir(tmp_path: Path) -> Path:
    """An existing directory this process cannot create files in (root ignores file modes, so
    as root a read-only kernel directory stands in)."""
    if os.geteuid() == 0:
        path = Path("/sys/kernel")
        if not path.is_dir():
            pytest.skip("no read-only directory available to root")
        return path
    path = tmp_path / "ro"
    path.mkdir()
    path.chmod(0o555)
    return path


def _run(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "virtualmle", *args], cwd=tmp, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _search(tmp: Path, *extra: str) -> list[str]:
    sets = [x for k, v in TINY_FIXED.items() for x in ("--set", f"{k}={v}")]
    return ["search", "--method", "random", "--data", "beauty", "--trials", "1", "--space",
            str(write_tiny_space(tmp)), "--storage", f"sqlite:///{tmp / 's.db'}", "--slice-users",
            str(TINY_SLICE_USERS), "--max-epochs", "1", "--device", "cpu", "--quiet", *sets, *extra]


@pytest.mark.parametrize("study", ["../../../ESCAPED", "ABSOLUTE"])
def test_hostile_study_name_stays_inside_runs(tmp_path, study):
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    if study == "ABSOLUTE":  # an absolute path outside the working directory
        study = str(tmp_path / "ESCAPED")
    res = _run(work, *_search(work, "--study", study))
    assert res.returncode == 0, res.stderr[-2000:]
    assert not (tmp_path / "ESCAPED").exists()
    made = [p for p in (work / "runs").iterdir()]
    assert len(made) == 1 and "ESCAPED" in made[0].name  # one directory inside runs/
    assert (made[0] / "trials" / "0000" / "spec.json").exists()


def test_study_name_without_letters_is_refused_in_one_line(tmp_path):
    res = _run(tmp_path, *_search(tmp_path, "--study", "../.."))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "virtualmle: error: --study '../..' gives no usable directory name: use letters or digits"]


def test_read_only_run_dir_is_one_line_exit_2_before_any_trial(tmp_path):
    ro = _read_only_dir(tmp_path)
    res = _run(tmp_path, *_search(tmp_path, "--study", "ro", "--run-dir", str(ro)))
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"virtualmle: error: --run-dir {ro}: not writable")
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    assert [s.study_name for s in storage.get_all_studies()] == []  # no study, no trial


def test_unwritable_memory_dir_is_one_line_exit_2_before_any_trial(tmp_path):
    bad = _read_only_dir(tmp_path) / "memory"
    (tmp_path / "agent.yaml").write_text(
        "model: sasrec\nfixed: {max_len: 20, batch_size: 256, patience: 1, heads: 1}\nparams:\n"
        "  hidden: {type: categorical, choices: [16, 32], default: 16, grid: [16, 32]}\n")
    res = _run(tmp_path, "tune", "--data", "beauty", "--trials", "2", "--space", str(tmp_path / "agent.yaml"),
               "--storage", f"sqlite:///{tmp_path / 's.db'}", "--study", "mem", "--memory", str(bad),
               "--slice-users", str(TINY_SLICE_USERS), "--max-epochs", "1", "--quiet", "--device", "cpu")
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("virtualmle: error:") and str(bad) in lines[0], lines
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    assert [s.study_name for s in storage.get_all_studies()] == []  # no study, no trial


def test_memory_write_failure_mid_study_stops_with_one_line_and_keeps_the_trial(tmp_path):
    import shutil
    import time

    from fake_openai import fake_openai
    from optuna.trial import TrialState

    (tmp_path / "agent.yaml").write_text(
        "model: sasrec\nfixed: {max_len: 20, batch_size: 256, patience: 1, heads: 1}\nparams:\n"
        "  hidden: {type: categorical, choices: [16, 24, 32], default: 16, grid: [16, 24, 32]}\n"
        "  dropout: {type: float, low: 0.0, high: 0.5, default: 0.2, grid: [0.1, 0.2, 0.3]}\n")
    url = f"sqlite:///{tmp_path / 's.db'}"
    with fake_openai() as server:
        server.behaviour.delay = {"Reflection": 3.0}  # time to break the bank inside trial 1's observe step
        proc = subprocess.Popen(
            [sys.executable, "-m", "virtualmle", "tune", "--data", "beauty", "--trials", "3",
             "--space", str(tmp_path / "agent.yaml"), "--storage", url, "--study", "midway",
             "--memory", str(tmp_path / "memory"), "--run-dir", str(tmp_path / "run"),
             "--slice-users", str(TINY_SLICE_USERS), "--max-epochs", "1", "--device", "cpu", "--quiet",
             "--transfer", "none", "--llm", server.spec(retries=0)],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            deadline, broken = time.monotonic() + 200, False
            while time.monotonic() < deadline and not broken:
                time.sleep(0.1)
                try:
                    trials = optuna.load_study(study_name="midway", storage=url).get_trials(deepcopy=False)
                except Exception:
                    continue
                if any(t.number == 1 and "valid" in t.user_attrs for t in trials):
                    shutil.rmtree(tmp_path / "memory" / "insights")
                    (tmp_path / "memory" / "insights").write_text("not a directory")
                    broken = True
            assert broken, "trial 1 never reached its observe step"
            out, err = proc.communicate(timeout=200)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert lines[-1].startswith("virtualmle: error: memory bank: cannot record trial 1"), lines
    assert "Traceback" not in err
    trials = sorted(optuna.load_study(study_name="midway", storage=url).get_trials(), key=lambda t: t.number)
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.COMPLETE), (1, TrialState.COMPLETE)]
    attrs = trials[1].user_attrs
    assert {"diagnostics", "verdict", "reflection", "memory_error"} <= set(attrs)  # observations kept
