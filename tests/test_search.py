"""The search loop and `virtualmle search`, end to end with real trials on a slice of Beauty."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from virtualmle.search.loop import SearchOptions, run_search
from virtualmle.search.method import TrialRecord
from virtualmle.methods import get_method, method_names
from virtualmle.search.space import load_space
from virtualmle.search.storage import open_storage
from virtualmle.search.testing import TINY_FIXED, TINY_SLICE_USERS, write_tiny_space
from virtualmle.search.worker import TEST_FAULT_ENV


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)


def cli(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "virtualmle", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def tiny_args(space: Path, db: Path, method: str, trials: int, *extra: str) -> list[str]:
    sets = [x for k, v in TINY_FIXED.items() for x in ("--set", f"{k}={v}")]
    return ["search", "--method", method, "--data", "beauty", "--model", "sasrec", "--trials", str(trials),
            "--space", str(space), "--storage", f"sqlite:///{db}", "--slice-users", str(TINY_SLICE_USERS),
            "--max-epochs", "1", "--quiet", *sets, *extra]


def tiny_options(tmp_path: Path, **kw) -> SearchOptions:
    return SearchOptions(data="beauty", model="sasrec", space=load_space(path=write_tiny_space(tmp_path)),
                         slice_users=TINY_SLICE_USERS, max_epochs=1, fixed=dict(TINY_FIXED),
                         run_dir=tmp_path / "runs", device="cpu", **kw)


BAD_INPUT = [
    (["--method", "hyperband"], "unknown method 'hyperband'"),
    (["--model", "gru4rec"], "unknown backbone 'gru4rec'"),
    (["--set", "learning_rate=0.1"], "unknown parameter 'learning_rate'"),
    (["--storage", "nosuchdb://x/y"], "cannot open storage 'nosuchdb://x/y'"),
    (["--space", "BAD"], "search space"),
    (["--set", "hidden=64"], "'hidden' is searched"),
]


def _bad_argv(tmp_path: Path, args: list[str]) -> tuple[list[str], Path]:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: sasrec\nparams:\n  lr: {type: float, low: 1, high: 0, default: 1, grid: [1]}\n")
    base = {"--method": "tpe", "--data": "beauty", "--model": "sasrec", "--trials": "2"}
    opts = dict(zip(args[::2], args[1::2]))
    sets = [opts.pop("--set")] if "--set" in opts else []
    if opts.get("--space") == "BAD":
        opts["--space"] = str(bad)
    argv = ["search"] + [x for kv in {**base, **opts}.items() for x in kv] + [x for v in sets for x in ("--set", v)]
    return argv, bad


@pytest.mark.parametrize("args, match", BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, match):
    from virtualmle.cli import main

    argv, bad = _bad_argv(tmp_path, args)
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("virtualmle: error: ") and match in lines[0], lines
    if "--space" in args:
        assert str(bad) in lines[0]
    assert not list(tmp_path.glob("runs/*/trials/*")), "no trial may start on bad input"


def test_bad_input_exit_code_from_the_real_command(tmp_path):
    argv, _ = _bad_argv(tmp_path, ["--method", "hyperband"])
    res = cli(*argv)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "unknown method" in res.stderr


def test_registry_lists_classic_methods():
    assert {"grid", "random", "tpe", "default"} <= set(method_names())


@pytest.mark.slow
def test_faults_are_recorded_and_the_search_goes_on(tmp_path, monkeypatch):
    # Grid proposals are explicit, so trial numbers are predictable: 0 raises, 1 goes NaN,
    # 2 hangs past its timeout, 3 and 4 train.
    monkeypatch.setenv(TEST_FAULT_ENV, "raise@0,nan@1,hang@2")
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    # The timeout is generous: a tiny trial takes ~3 s, but much longer on a loaded 2-core box.
    opts = tiny_options(tmp_path, trials=5, workers=2, timeout_per_trial=25.0, prune=True)
    summary = run_search(get_method("grid", space=opts.space, seed=0), opts, storage=storage)
    assert summary.outcomes == {"failed": 1, "diverged": 1, "timeout": 1, "complete": 2}
    assert summary.trials_used == 5 and summary.compute_seconds > 25
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    by = {t.number: t for t in study.trials}
    assert by[0].state == TrialState.FAIL and by[0].user_attrs["error"].startswith("RuntimeError")
    assert "injected" in by[0].user_attrs["traceback"]
    assert by[1].user_attrs["outcome"] == "diverged" and by[2].user_attrs["outcome"] == "timeout"
    done = [by[3], by[4]]
    assert all(t.state == TrialState.COMPLETE for t in done)
    for t in done:
        assert t.value == t.user_attrs["valid"]["ndcg@10"]
        assert set(t.user_attrs["test"]) >= {"ndcg@10", "hr@10"}
        assert t.intermediate_values == {1: t.value}  # per-epoch validation metric, max_epochs 1
        assert t.user_attrs["seconds"] > 0 and t.user_attrs["num_params"] > 0
    best = max(done, key=lambda t: t.value)
    assert summary.best_number == best.number and summary.best_test == best.user_attrs["test"]
    assert study.user_attrs["dataset"] == "beauty" and study.user_attrs["method"] == "grid"
    # The grid never repeats a point, and methods never see test metrics.
    keys = {opts.space.grid_key(t.params) for t in study.trials}
    assert len(keys) == 5
    assert "test" not in TrialRecord.__dataclass_fields__


def test_default_control_repeats_the_default_with_new_seeds(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    opts = tiny_options(tmp_path, trials=2, workers=2)
    summary = run_search(get_method("default", space=opts.space, seed=0), opts, storage=storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert summary.study_name == "beauty-sasrec-default-s0"
    assert sorted(t.params["seed"] for t in study.trials) == [0, 1]
    defaults = opts.space.defaults()
    assert all({k: t.params[k] for k in defaults} == defaults for t in study.trials)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


@pytest.mark.slow
def test_cli_tpe_with_workers_then_resume_extends_the_budget(tmp_path):
    space, db = write_tiny_space(tmp_path), tmp_path / "s.db"
    res = cli(*tiny_args(space, db, "tpe", 3, "--workers", "2", "--json", str(tmp_path / "sum.json")))
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "sum.json").read_text())
    assert summary["trials_used"] == 3 and summary["outcomes"].get("complete") == 3
    assert "best trial #" in res.stdout and "test" in res.stdout
    study = optuna.load_study(study_name="beauty-sasrec-tpe-s0", storage=f"sqlite:///{db}")
    counted = [t for t in study.trials if not t.user_attrs.get("free")]
    assert len(counted) == 3
    # Sampler draws that broke hidden % heads were drawn again and did not use the budget.
    assert all(t.user_attrs["outcome"] == "invalid" for t in study.trials if t.user_attrs.get("free"))
    # The same command again: the budget is used, nothing runs.
    again = cli(*tiny_args(space, db, "tpe", 3, "--workers", "2"))
    assert again.returncode == 0 and len(optuna.load_study(study_name="beauty-sasrec-tpe-s0", storage=f"sqlite:///{db}").trials) == len(study.trials)
    # A larger budget continues the same study.
    more = cli(*tiny_args(space, db, "tpe", 4))
    assert more.returncode == 0, more.stderr
    study = optuna.load_study(study_name="beauty-sasrec-tpe-s0", storage=f"sqlite:///{db}")
    assert sum(1 for t in study.trials if t.state == TrialState.COMPLETE) == 4


def test_study_identity_is_checked_on_resume(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    optuna.create_study(storage=storage, study_name="taken").set_user_attr("model", "hstu")
    opts = tiny_options(tmp_path, trials=1, study_name="taken")
    from virtualmle.errors import StorageError

    with pytest.raises(StorageError, match="created for model='hstu'"):
        run_search(get_method("random", space=opts.space), opts, storage=storage)


@pytest.mark.slow
def test_kill_9_mid_trial_then_resume_completes_budget_without_duplicates(tmp_path):
    space, db = write_tiny_space(tmp_path), tmp_path / "s.db"
    args = tiny_args(space, db, "grid", 4)
    args[args.index("--max-epochs") + 1] = "3"
    proc = subprocess.Popen([sys.executable, "-m", "virtualmle", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"sqlite:///{db}"
    deadline, killed_running = time.monotonic() + 150, None
    while time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            trials = optuna.load_study(study_name="beauty-sasrec-grid-s0", storage=url).trials
        except Exception:
            continue
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if done and running:
            time.sleep(0.5)  # well inside the running trial
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed_running = running[0].number
            break
    assert killed_running is not None, proc.stderr.read() if proc.poll() is not None else "no trial ran"
    before = {t.number: (t.value, t.datetime_complete) for t in
              optuna.load_study(study_name="beauty-sasrec-grid-s0", storage=url).trials
              if t.state == TrialState.COMPLETE}
    # The orphaned trial process dies with its parent (PR_SET_PDEATHSIG).
    spec = json.loads(next((tmp_path / "runs").glob(f"*/trials/{killed_running:04d}/spec.json")).read_text())
    assert spec["number"] == killed_running
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    trials = optuna.load_study(study_name="beauty-sasrec-grid-s0", storage=url).trials
    by = {t.number: t for t in trials}
    assert by[killed_running].state == TrialState.FAIL
    assert by[killed_running].user_attrs["outcome"] == "interrupted"
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4  # the budget, exactly
    keys = [load_space(path=space).grid_key(t.params) for t in complete]
    assert len(set(keys)) == 4  # nothing run twice
    assert any(t.user_attrs.get("rerun_of") == killed_running for t in complete)
    for number, (value, finished) in before.items():  # nothing completed was lost or redone
        assert by[number].value == value and by[number].datetime_complete == finished


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_sigterm_stops_like_ctrl_c_and_leaves_nothing_running(tmp_path, executor):
    """`kill PID` on a background search: running trials are killed and recorded as interrupted
    (not left RUNNING), the command exits 143 with one line saying how to resume. With Ray too,
    whose ray.init installs a SIGTERM handler of its own."""
    if executor == "ray":
        pytest.importorskip("ray")
    space, db = write_tiny_space(tmp_path), tmp_path / "s.db"
    args = tiny_args(space, db, "grid", 4, "--executor", executor)
    args[args.index("--max-epochs") + 1] = "200"
    args[args.index("patience=1")] = "patience=0"  # never stops early: still running when signalled
    proc = subprocess.Popen([sys.executable, "-m", "virtualmle", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = f"sqlite:///{db}"
        deadline, running = time.monotonic() + 150, []
        while time.monotonic() < deadline and not running and proc.poll() is None:
            time.sleep(0.3)
            try:
                running = [t.number for t in optuna.load_study(study_name="beauty-sasrec-grid-s0", storage=url).trials
                           if t.state == TrialState.RUNNING]
            except Exception:
                continue
        assert running, proc.stderr.read() if proc.poll() is not None else "no trial started"
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert time.monotonic() - t0 < 30
    assert "stopped (SIGTERM)" in err and "resume" in err
    trials = optuna.load_study(study_name="beauty-sasrec-grid-s0", storage=url).trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    by = {t.number: t for t in trials}
    assert by[running[0]].state == TrialState.FAIL
    assert by[running[0]].user_attrs["outcome"] == "interrupted"


class _PlanMethod:
    """A user-written method (the `Method` protocol): fixed proposals in a fixed order."""

    name = "plan"

    def __init__(self, plan: list[dict]) -> None:
        self.plan = plan

    def propose(self, ctx):
        from virtualmle.search.method import Proposal

        i = len(ctx.history) + len(ctx.pending)
        return Proposal(params=self.plan[i]) if i < len(self.plan) else None

    def observe(self, ctx, record):
        return {}


@pytest.mark.slow
def test_median_pruner_stops_a_hopeless_trial_in_a_real_search(tmp_path):
    """Three sound learning rates train to the end; then one that cannot learn (lr 1e-6) falls
    below the median of their per-epoch validation curves and is pruned before its last epoch."""
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    plan = [{"hidden": 32, "heads": 1, "lr": lr, "negatives": 16} for lr in (3e-3, 5e-3, 1e-2, 1e-6)]
    opts = tiny_options(tmp_path, trials=4, prune=True)
    opts.max_epochs = 4
    opts.fixed["patience"] = 0
    summary = run_search(_PlanMethod(plan), opts, storage=storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    by = {t.params.get("lr", t.user_attrs.get("extra_params", {}).get("lr")): t for t in study.trials}
    hopeless = by[1e-6]
    assert hopeless.state == TrialState.PRUNED, (hopeless.state, hopeless.intermediate_values)
    assert hopeless.user_attrs["outcome"] == "pruned"
    assert 1 <= len(hopeless.intermediate_values) < 4
    for lr in (3e-3, 5e-3, 1e-2):
        assert by[lr].state == TrialState.COMPLETE and len(by[lr].intermediate_values) == 4
    assert summary.outcomes.get("pruned") == 1
