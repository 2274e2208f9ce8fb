"""`virtualmle bench` and the tabular benchmark, on the committed Grid-729 table of real Beauty trials."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from virtualmle.bench.table import TableExecutor, TrialTable
from virtualmle.errors import DataError
from virtualmle.search.executor import TrialSpec
from virtualmle.search.method import Outcome
from virtualmle.search.storage import open_storage

TABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "tables" / "beauty_sasrec_grid729.csv"


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def table() -> TrialTable:
    return TrialTable.load(TABLE)


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "virtualmle", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def spec_for(number: int, config: dict, tmp_path: Path) -> TrialSpec:
    return TrialSpec(number=number, data="beauty", config=config, trial_dir=str(tmp_path / f"t{number}"))


def test_committed_table_header_and_rows(table):
    assert table.dataset == "beauty" and table.backbone == "sasrec" and table.metric == "ndcg@10"
    assert table.axes == ["hidden", "blocks", "dropout", "lr", "weight_decay", "batch_size"]
    for key in ("machine", "date", "points"):
        assert table.meta.get(key), key
    assert table.fidelity["slice_users"] and table.fidelity["max_epochs"]
    assert len(table.rows) >= 100
    assert len({table.key(r.params) for r in table.rows}) == len(table.rows)  # one row per grid point
    done = [r for r in table.rows if r.outcome is Outcome.COMPLETE]
    assert done and all(0.0 <= r.valid["ndcg@10"] <= 1.0 and r.seconds > 0 for r in done)


def test_lookup_of_a_table_point_returns_its_stored_metrics(table, tmp_path):
    row = next(r for r in table.rows if r.outcome is Outcome.COMPLETE)
    ex = TableExecutor(table)
    config = {**table.constants, **row.params, "seed": 7, "model": "sasrec", "metric": "ndcg@10", "max_epochs": 3}
    out = ex.run(spec_for(0, config, tmp_path))
    assert out.outcome is Outcome.COMPLETE
    assert out.result["valid"] == row.valid and out.result["test"] == row.test
    assert out.seconds == row.seconds and len(out.epochs) == len(row.epochs)
    assert ex.snaps[0].snapped is False and ex.snaps[0].distance == 0.0


def test_a_trial_stopped_after_its_best_epoch_answers_that_epochs_test_metrics(table, tmp_path):
    # A row whose best epoch is not its last: stopped there (by the budget, say), the best so far
    # is the real run's best epoch, whose validation and test metrics the table holds.
    row = next(r for r in table.rows if r.outcome is Outcome.COMPLETE and r.best_epoch and r.best_epoch < len(r.epochs))
    ex = TableExecutor(table)
    config = {**table.constants, **row.params, "model": "sasrec", "metric": "ndcg@10"}
    out = ex.run(spec_for(0, config, tmp_path), on_epoch=lambda e: e["epoch"] == row.best_epoch)
    assert out.outcome is Outcome.PRUNED and [e["epoch"] for e in out.epochs] == list(range(1, row.best_epoch + 1))
    assert out.result["valid"] == row.valid and out.result["test"] == row.test and out.result["best_epoch"] == row.best_epoch
    # Stopped before it, only the validation of the best epoch so far is known.
    early = next(r for r in table.rows if r.outcome is Outcome.COMPLETE and r.best_epoch and r.best_epoch > 1)
    out = ex.run(spec_for(1, {**table.constants, **early.params, "model": "sasrec", "metric": "ndcg@10"}, tmp_path),
                 on_epoch=lambda e: True)
    assert out.outcome is Outcome.PRUNED and out.result["test"] == {}
    assert out.result["valid"] == {"ndcg@10": early.epochs[0]["valid"]["ndcg@10"]}


def test_off_table_proposal_snaps_to_the_nearest_point_and_is_counted(table, tmp_path):
    ex = TableExecutor(table)
    base = next(r for r in table.rows if r.outcome is Outcome.COMPLETE)
    top_lr = max(table.axis_values()["lr"])
    config = {**table.constants, **base.params, "lr": top_lr * 5, "loss": "bce"}
    out = ex.run(spec_for(1, config, tmp_path))
    snap = ex.snaps[1]
    assert snap.snapped and snap.moved["loss"] == ("bce", table.constants["loss"])
    assert snap.moved["lr"][0] == top_lr * 5
    # The answer is a real row: the nearest one on the normalised axes.
    # the nearest point moves lr down to the table's top value (the point exists for a complete row)
    assert table.key({**base.params, "lr": top_lr}) in table._index
    assert snap.row.params["lr"] == top_lr
    assert snap.row.outcome is Outcome.COMPLETE and out.result["valid"] == snap.row.valid
    exact = {**table.constants, **base.params}
    ex.run(spec_for(2, exact, tmp_path))
    assert sum(s.snapped for s in ex.snaps.values()) == 1


def test_broken_tables_name_the_file_and_line(tmp_path):
    text = TABLE.read_text().splitlines()
    no_axes = tmp_path / "no_axes.csv"
    no_axes.write_text("\n".join(line for line in text if not line.startswith("# axes:")) + "\n")
    with pytest.raises(DataError, match=r"no_axes\.csv: header line '# axes: \.\.\.' is missing"):
        TrialTable.load(no_axes)
    header_lines = sum(1 for line in text if line.startswith("#"))
    bad = list(text)
    bad[header_lines + 2] = bad[header_lines + 2].replace("complete", "exploded", 1)
    bad_row = tmp_path / "bad_row.csv"
    bad_row.write_text("\n".join(bad) + "\n")
    with pytest.raises(DataError, match=rf"bad_row\.csv: line {header_lines + 3}:"):
        TrialTable.load(bad_row)
    r = cli("bench", "--table", str(bad_row), "--methods", "random", "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "bad_row.csv: line" in r.stderr


def test_bad_method_name_is_one_line_exit_2(tmp_path):
    out = tmp_path / "o"
    r = cli("bench", "--table", str(TABLE), "--methods", "tpe,hyperband", "--out", str(out))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "unknown method 'hyperband'" in r.stderr and "tpe" in r.stderr
    assert not out.exists()  # nothing was started


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--table", str(TABLE), "--executor", "ray"], "cannot be used with --table"),
        (["--data", "beauty", "--ray-address", "127.0.0.1:1"], "--ray-address needs --executor ray"),
        (["--data", "beauty", "--agent-screen-repeat", "2"], "--agent-screen-repeat K needs K >= 0 and --agent-screen"),
    ],
)
def test_executor_options_are_checked_before_any_work(tmp_path, extra, message):
    out = tmp_path / "o"
    r = cli("bench", "--methods", "tpe", "--out", str(out), *extra)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and message in r.stderr
    assert not (out / "bench.db").exists()


@pytest.mark.slow
def test_tabular_bench_cli_writes_reports_and_resumes(table, tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "--table", str(TABLE), "--methods", "tpe,default", "--seeds", "2",
            "--out", str(out), "--quiet"]
    r = cli(*args, "--trials", "5")
    assert r.returncode == 0, r.stderr
    for name in ("runs.csv", "summary.csv", "curves.csv", "bench.md", "bench.json", "best_vs_trials.png",
                 "best_vs_seconds.png"):
        assert (out / name).is_file(), name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    runs = read_csv(out / "runs.csv")
    assert sorted((r["method"], r["seed"]) for r in runs) == sorted(
        (m, s) for m in ("tpe", "default") for s in ("0", "1"))
    assert all(r["trials"] == "5" for r in runs)
    md = (out / "bench.md").read_text()
    assert all(f"| {m} |" in md for m in ("tpe", "default")) and "snapped trials" in md

    # Every number traces back to the table: the chosen configuration's test metric is the
    # table's test metric of that point, and a run's compute seconds are the table's seconds.
    storage = open_storage(f"sqlite:///{out / 'bench.db'}")
    for run in runs:
        study = optuna.load_study(study_name=run["study"], storage=storage)
        best = json.loads(run["best_params"])
        snap = table.lookup(best)
        assert float(run["test_of_best"]) == pytest.approx(snap.row.test["ndcg@10"])
        seconds = sum(table.lookup({**t.params}).row.seconds for t in study.trials)
        assert float(run["compute_seconds"]) == pytest.approx(seconds, rel=1e-6)
        snapped = sum(table.lookup({**t.params}).snapped for t in study.trials)
        assert int(run["snapped"]) == snapped
    default_key = table.key({"hidden": 128, "blocks": 1, "dropout": 0.2, "lr": 3e-4, "weight_decay": 1e-5,
                             "batch_size": 256})
    expect = 0 if default_key in table._index else 5
    assert all(int(r["snapped"]) == expect for r in runs if r["method"] == "default")

    # Resume: the same command with a larger budget continues each study; nothing is redone.
    first = {r["study"]: [t.params for t in optuna.load_study(study_name=r["study"], storage=storage).trials]
             for r in runs}
    r = cli(*args, "--trials", "7")
    assert r.returncode == 0, r.stderr
    runs2 = read_csv(out / "runs.csv")
    assert all(r["trials"] == "7" for r in runs2)
    for name, params in first.items():
        trials = optuna.load_study(study_name=name, storage=storage).trials
        assert len(trials) == 7 and [t.params for t in trials[:5]] == params
    # Again with the same budget: no new trials.
    r = cli(*args, "--trials", "7")
    assert r.returncode == 0, r.stderr
    assert all(len(optuna.load_study(study_name=n, storage=storage).trials) == 7 for n in first)


@pytest.mark.slow
def test_tabular_bench_with_the_agent_counts_llm_usage(tmp_path):
    from virtualmle.llm import log_summary, read_log
    from virtualmle.methods import method_names

    assert "agent" in method_names()
    out = tmp_path / "bench"
    r = cli("bench", "--table", str(TABLE), "--methods", "agent,random", "--trials", "3", "--seeds", "1",
            "--agent-no-reflection", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    runs = {row["method"]: row for row in read_csv(out / "runs.csv")}
    assert set(runs) == {"agent-norefl", "random"} and runs["agent-norefl"]["trials"] == "3"
    log = read_log(out / "runs" / runs["agent-norefl"]["study"] / "llm_log.jsonl")
    s = log_summary(log) if log else {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
    assert int(runs["agent-norefl"]["llm_calls"]) == s["calls"]
    assert int(runs["agent-norefl"]["llm_tokens"]) == s["prompt_tokens"] + s["completion_tokens"]
    assert runs["random"]["llm_calls"] == "0"


def test_the_agent_with_its_llm_steps_off_is_a_method_of_its_own_that_asks_no_llm(tmp_path):
    out = tmp_path / "bench"
    r = cli("bench", "--table", str(TABLE), "--methods", "agent", "--trials", "3", "--seeds", "1",
            "--agent-code", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    (run,) = read_csv(out / "runs.csv")
    assert run["method"] == "agent-code" and run["study"].endswith("agent-code-s0") and run["trials"] == "3"
    assert run["llm_calls"] == "0" and run["llm_tokens"] == "0"


def test_a_compute_budget_stops_every_method_at_equal_compute_and_resumes(table, tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "--table", str(TABLE), "--methods", "random,tpe+hyperband", "--seeds", "1",
            "--out", str(out), "--quiet"]
    r = cli(*args, "--budget", "4m")
    assert r.returncode == 0, r.stderr
    storage = open_storage(f"sqlite:///{out / 'bench.db'}")
    runs = read_csv(out / "runs.csv")
    assert sorted(r["method"] for r in runs) == ["random", "tpe+hyperband"]
    longest = max(row.seconds for row in table.rows)
    spent = {}
    for run in runs:
        study = optuna.load_study(study_name=run["study"], storage=storage)
        seconds = [float(t.user_attrs["seconds"]) for t in study.trials]
        spent[run["method"]] = sum(seconds)
        # Spent to the budget, overshooting by less than one trial: only the last trial crossed it
        # (stopped at the epoch where it did, unless that was its last epoch anyway).
        assert 240 <= sum(seconds) < 240 + longest
        assert sum(seconds[:-1]) < 240
        budget_stops = [t.number for t in study.trials if t.user_attrs.get("stopped_by") == "budget"]
        assert budget_stops in ([], [study.trials[-1].number])
        assert study.user_attrs["time_budget"] == 240
    # Hyperband stops poor curves early, so it fits more trials in the same compute.
    hb = optuna.load_study(study_name=next(r["study"] for r in runs if r["method"] == "tpe+hyperband"),
                           storage=storage)
    assert sum(t.user_attrs.get("stopped_by") == "pruner" for t in hb.trials) >= 1

    # Resume with the same budget: nothing left to spend, no trial added; a larger one continues.
    before = {run["study"]: len(optuna.load_study(study_name=run["study"], storage=storage).trials) for run in runs}
    r = cli(*args, "--budget", "4m")
    assert r.returncode == 0, r.stderr
    after = {s: len(optuna.load_study(study_name=s, storage=storage).trials) for s in before}
    assert after == before
    r = cli(*args, "--budget", "6m")
    assert r.returncode == 0, r.stderr
    for s, n in before.items():
        study = optuna.load_study(study_name=s, storage=storage)
        assert len(study.trials) > n
        assert 360 <= sum(float(t.user_attrs.get("seconds", 0.0)) for t in study.trials) < 360 + longest


def test_bad_budget_and_pruner_are_one_line_exit_2(tmp_path):
    r = cli("bench", "--table", str(TABLE), "--methods", "tpe", "--budget", "45 minutes", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "--budget '45 minutes'" in r.stderr and r.stderr.strip().count("\n") == 0
    r = cli("bench", "--table", str(TABLE), "--methods", "tpe+asha", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "unknown pruner 'asha'" in r.stderr
    assert not (tmp_path / "o").exists()


def test_space_option_searches_that_space_in_its_own_studies(tmp_path):
    # Issue 13 section 4 compares methods on the extended space (training length, structure).
    out = tmp_path / "o"
    r = cli("bench", "--data", "beauty", "--slice-users", "300", "--max-epochs", "1", "--methods", "random",
            "--seeds", "1", "--trials", "2", "--space", "extended", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    storage = open_storage(f"sqlite:///{out / 'bench.db'}")
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    assert names == ["bench-beauty-sasrec-extended-random-s0"]
    trials = optuna.load_study(study_name=names[0], storage=storage).trials
    assert len(trials) == 2
    assert all("lr_schedule" in t.params and "prior_cooc" in t.params for t in trials)  # extended-only axes
    r = cli("bench", "--table", str(TABLE), "--methods", "tpe", "--space", "extended", "--out", str(tmp_path / "t"))
    assert r.returncode == 2 and "--space cannot be used with --table" in r.stderr
    assert not (tmp_path / "t" / "bench.db").exists()


def test_the_epoch_a_budget_ends_on_is_part_of_the_trials_curve(table, tmp_path):
    # A 1-second budget ends the first trial at its first epoch (each table row trained 3 epochs).
    out = tmp_path / "bench"
    r = cli("bench", "--table", str(TABLE), "--methods", "random", "--seeds", "1", "--budget", "1s",
            "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name=read_csv(out / "runs.csv")[0]["study"],
                              storage=open_storage(f"sqlite:///{out / 'bench.db'}"))
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["stopped_by"] == "budget"
    first = trial.user_attrs["epochs"][0]
    assert [e["epoch"] for e in trial.user_attrs["epochs"]] == [1]
    assert trial.intermediate_values == {1: first["valid"]["ndcg@10"]}


def test_the_transfer_experiment_keeps_its_memory_banks_where_memory_says(tmp_path):
    # A bench continued on another machine needs its banks (insights, cognition summaries) beside
    # the committed journal, not in the machine-local --out.
    if not (Path(os.environ.get("VIRTUALMLE_DATA_DIR", "")) / "Baby.txt").is_file():
        pytest.skip("Baby.txt not in VIRTUALMLE_DATA_DIR")
    mem, out = tmp_path / "banks", tmp_path / "out"
    r = cli("bench", "--transfer-experiment", "--table", str(TABLE), "--sources", "baby", "--source-trials", "1",
            "--trials", "2", "--seeds", "1", "--transfer-arms", "auto", "--agent-no-reflection", "--quiet",
            "--memory", str(mem), "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    summaries = list((mem / "bank-sources").glob("summaries/baby__sasrec__*.json"))
    assert len(summaries) == 1
    assert (mem / "bank-auto-norefl-s0" / "summaries" / summaries[0].name).is_file()  # the arm's copy
    assert not list((out / "transfer").glob("bank-*"))


def test_llm_usage_is_kept_with_the_study_when_the_bench_moves_to_another_machine(tmp_path):
    from virtualmle.bench.usage import record_run, stored_llm_usage
    from virtualmle.llm.log import LOG_NAME, CallLog
    from virtualmle.llm.redact import Redactor

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="run")

    def calls(run_dir: Path, ids: list[str]) -> None:
        log = CallLog(run_dir / LOG_NAME, Redactor())
        for i in ids:
            log.append({"call_id": i, "prompt_tokens": 10, "completion_tokens": 5, "latency_s": 0.5})

    first, second, bare = tmp_path / "machine-a", tmp_path / "machine-b", tmp_path / "machine-c"
    calls(first, ["a1", "a2"])
    record_run(study, first, wall=10.0)
    record_run(study, first, wall=5.0)  # a resume on the same machine: the same log, counted once
    assert stored_llm_usage(study, bare)["calls"] == 2  # the log is gone, storage still knows
    calls(second, ["b1"])
    assert stored_llm_usage(study, second)["calls"] == 3  # with the new machine's log, before recording
    record_run(study, second, wall=1.0)
    usage = stored_llm_usage(study, second)
    assert (usage["calls"], usage["tokens"], usage["seconds"]) == (3, 45, 1.5)
    assert stored_llm_usage(study, bare)["calls"] == 3
    assert study.user_attrs["bench_wall_seconds"] == 16.0


def test_an_unusable_memory_directory_is_one_line_exit_2_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = tmp_path / "out"
    r = cli("bench", "--table", str(TABLE), "--methods", "agent", "--trials", "1", "--seeds", "1",
            "--memory", str(blocker / "banks"), "--out", str(out), "--quiet")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"virtualmle: error: --memory {blocker / 'banks'}: not writable (Not a directory)"]
    assert not out.exists()
