"""The Ray executor on a real two-node Ray cluster on 127.0.0.1 (head + a second node process).

The cluster is started with ``ray start --block`` in its own session, so the finalizer stops
exactly the processes this test started (by their session id), never other Ray instances.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install 'virtualmle[ray]')")

import optuna  # noqa: E402

from virtualmle.search.testing import write_tiny_space  # noqa: E402

pytestmark = pytest.mark.slow
DATA_DIR = os.environ["VIRTUALMLE_DATA_DIR"]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_pids(sid: int) -> list[int]:
    """Processes of the session ``sid`` (everything one ``ray start`` launched)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == sid:  # field 6 of /proc/PID/stat: session id
                pids.append(int(entry.name))
    return pids


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            pass
    for pid in _session_pids(proc.pid):  # raylet, GCS and Ray workers (own process groups)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}: {path.read_text()[-2000:]}")
        time.sleep(0.5)
    raise RuntimeError(f"ray start did not come up in {timeout} s: {path.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node (2 CPUs) and a second node (1 CPU) on 127.0.0.1; yields the address."""
    tmp = tmp_path_factory.mktemp("ray")
    port = _free_port()
    # 127.0.0.1 only, so token auth adds nothing here; Ray's temp dir stays under tmp.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "VIRTUALMLE_DATA_DIR": DATA_DIR}
    common = ["--block", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    procs = []
    try:
        head_log = tmp / "head.out"
        head = subprocess.Popen(
            [RAY, "start", "--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard=false",
             "--temp-dir", str(tmp / "t"), *common],
            env=env, stdout=open(head_log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(head)
        _wait_for(head_log, "Ray runtime started", head)
        node_log = tmp / "node.out"
        node = subprocess.Popen(
            [RAY, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1", *common],
            env=env, stdout=open(node_log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(node)
        _wait_for(node_log, "Ray runtime started", node)
        yield {"address": f"127.0.0.1:{port}", "env": env}
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _search_cmd(address: str, tmp: Path, storage: str, *extra: str) -> list[str]:
    space = write_tiny_space(tmp)
    return [sys.executable, "-m", "virtualmle", "search", "--method", "grid", "--data", "beauty",
            "--space", str(space), "--trials", "4", "--workers", "2", "--max-epochs", "1",
            "--slice-users", "800", "--set", "batch_size=256", "--set", "patience=1", "--device", "cpu",
            "--storage", storage, "--run-dir", str(tmp / "run"), "--executor", "ray",
            "--ray-address", address, "--quiet", *extra]


def test_sqlite_is_refused_on_a_two_node_cluster(cluster, tmp_path):
    db = tmp_path / "s.db"
    r = subprocess.run(_search_cmd(cluster["address"], tmp_path, f"sqlite:///{db}"), env=cluster["env"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert "SQLite" in last and "2 nodes" in last and "postgresql://" in last and "journal:///" in last
    assert not db.exists()  # refused before the file was created


def _trial_process(spec: Path) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"virtualmle.search.worker" in argv and str(spec).encode() in argv:
                return int(entry.name)
    return None


def _parent(pid: int) -> int:
    return int((Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split())[1])


def test_four_trials_two_at_once_and_a_killed_worker_is_requeued(cluster, tmp_path):
    journal = tmp_path / "studies.log"
    env = {**cluster["env"], "VIRTUALMLE_TEST_FAULT": "hang@1"}  # forwarded by the executor to its trials
    cmd = _search_cmd(cluster["address"], tmp_path, f"journal:///{journal}", "--timeout-per-trial", "100",
                      "--json", str(tmp_path / "summary.json"))
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        spec = tmp_path / "run" / "trials" / "0001" / "spec.json"
        deadline = time.monotonic() + 90
        trial_pid = None
        while trial_pid is None and time.monotonic() < deadline and driver.poll() is None:
            trial_pid = _trial_process(spec)
            time.sleep(0.3)
        assert trial_pid is not None, f"trial 1 never started: {driver.stderr.read() if driver.poll() is not None else ''}"
        ray_worker = _parent(trial_pid)
        assert b"ray" in Path(f"/proc/{ray_worker}/cmdline").read_bytes().lower()  # the Ray worker process
        time.sleep(1.0)
        os.kill(ray_worker, signal.SIGKILL)  # the worker process dies mid-trial
        gone = time.monotonic() + 15
        while Path(f"/proc/{trial_pid}").exists() and time.monotonic() < gone:
            time.sleep(0.2)
        assert not Path(f"/proc/{trial_pid}").exists(), "the trial's subprocess outlived its Ray worker"
        out, err = driver.communicate(timeout=150)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert driver.returncode == 0, err[-3000:]

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["trials_used"] == 4 and summary["outcomes"].get("complete") == 4, summary
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.load_study(study_name=summary["study_name"],
                              storage=JournalStorage(JournalFileBackend(str(journal))))
    trials = study.get_trials()
    lost = trials[1]
    assert lost.state is optuna.trial.TrialState.FAIL and lost.user_attrs["outcome"] == "interrupted"
    assert "WorkerLost" in lost.user_attrs["error"] and f"pid {ray_worker}" in lost.user_attrs["error"]
    reruns = [t for t in trials if t.user_attrs.get("rerun_of") == 1]
    assert len(reruns) == 1 and reruns[0].state is optuna.trial.TrialState.COMPLETE
    assert reruns[0].params == lost.params
    done = [t for t in trials if t.state is optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4 and len(trials) == 5
    # Two at once: some pair of trials overlapped in time.
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))


def test_ray_options_need_the_ray_executor():
    import argparse

    from virtualmle.errors import ConfigError
    from virtualmle.search.executors import add_executor_arguments, make_executor

    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    add_executor_arguments(parser)
    with pytest.raises(ConfigError, match="--ray-address needs --executor ray"):
        make_executor(parser.parse_args(["--ray-address", "127.0.0.1:1"]))
    with pytest.raises(ConfigError, match="--cpus-per-trial must be > 0"):
        make_executor(parser.parse_args(["--executor", "ray", "--cpus-per-trial", "0"]))
    local = make_executor(parser.parse_args(["--workers", "3"]))
    assert type(local).__name__ == "LocalExecutor" and local.workers == 3
    local.shutdown()
