"""Rough edges a new user hit (issue 14 section 3), each through the real CLI in a subprocess:
nothing created before the inputs are known good, no lock file, whole progress lines when not on
a terminal, and help texts that name what the code really writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, VIRTUALMLE_CACHE_DIR=str(cwd / "cache"))
    return subprocess.run([sys.executable, "-m", "virtualmle", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_report_on_a_missing_database_creates_nothing(tmp_path):
    r = cli("report", "--storage", "sqlite:///none.db", "--out", "rep", cwd=tmp_path)
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "none.db" in line and "no such file" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["search", "tune"])
def test_malformed_data_leaves_no_database(tmp_path, command):
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id\n1,2\n1,3\n1,5\n2,4\n")  # user 2 has one interaction
    extra = ["--method", "random"] if command == "search" else ["--no-memory", "--llm", "http://127.0.0.1:9/v1#none"]
    r = cli(command, *extra, "--data", str(bad), "--trials", "1", "--storage", "sqlite:///s.db", "--quiet",
            cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "bad.csv:5: user '2' has 1 interaction(s)" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["bad.csv"]


def test_search_progress_to_a_file_is_whole_lines_and_no_lock_file(tmp_path):
    beauty = Path(os.environ.get("VIRTUALMLE_DATA_DIR", "")) / "Beauty.txt"
    if not beauty.is_file():
        pytest.skip("Beauty.txt not in VIRTUALMLE_DATA_DIR")
    r = cli("search", "--method", "default", "--data", "beauty", "--slice-users", "300", "--max-epochs", "1",
            "--trials", "2", "--storage", "sqlite:///s.db", "--keep-models", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("trial ")]
    assert len(lines) == 2 and "…" not in r.stdout
    assert lines[1].startswith("trial    1  complete  ndcg@10 ") and "(2/2, best ndcg@10 " in lines[1]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("s.db")) == ["s.db"]
    assert not (tmp_path / "runs" / "beauty-sasrec-default-s0" / "best_model").exists()  # --keep-models 0


def test_help_texts_name_the_real_files_and_studies(tmp_path):
    from virtualmle.llm.log import LOG_NAME
    from virtualmle.search.storage import default_study_name

    tune = cli("tune", "--help", cwd=tmp_path)
    assert LOG_NAME in tune.stdout and "llm_calls.jsonl" not in tune.stdout
    memory = cli("memory", "--help", cwd=tmp_path)
    assert f"--study {default_study_name('beauty', 'sasrec', 'agent', 0)}" in memory.stdout
    docs = (Path(__file__).resolve().parents[1] / "docs" / "memory.md").read_text()
    assert "agent-s0" in docs and "agent-0" not in docs.replace("agent-s0", "")
