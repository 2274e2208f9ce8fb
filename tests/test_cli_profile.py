"""`virtualmle profile` through a real subprocess: output, JSON, and the error paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, tmp_path: Path, data_dir: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, VIRTUALMLE_CACHE_DIR=str(tmp_path / "cache"), COLUMNS="120")
    if data_dir is not None:
        env["VIRTUALMLE_DATA_DIR"] = data_dir
    return subprocess.run(
        [sys.executable, "-m", "virtualmle", "profile", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )


def test_missing_path_is_one_line_exit_2(tmp_path):
    r = run_cli("--data", "/nonexistent", tmp_path=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("virtualmle: error:") and "/nonexistent" in lines[0]
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_missing_named_dataset_says_where_to_put_it(tmp_path):
    r = run_cli("--data", "beauty", tmp_path=tmp_path, data_dir=str(tmp_path / "empty"))
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "Beauty.txt" in line and str(tmp_path / "empty") in line and "VIRTUALMLE_DATA_DIR" in line


def test_malformed_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 1 2 3\n2 1 two 3\n")
    r = run_cli("--data", str(bad), tmp_path=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert f"{bad}:2:" in line and "non-integer" in line


def test_json_output_on_a_table(tmp_path):
    f = tmp_path / "log.tsv"
    f.write_text("uid\tiid\tts\n" + "".join(f"u{u}\ti{(u + k) % 7}\t{k}\n" for u in range(5) for k in range(4)))
    r = run_cli("--data", str(f), "--json", "--user-col", "uid", "--item-col", "iid", "--time-col", "ts", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["users"], doc["items"], doc["interactions"]) == (5, 7, 20)
    assert doc["has_timestamps"] is True and doc["format"] == "tsv"
    assert doc["seq_len"]["max"] == 4


def test_table_output_on_beauty(tmp_path):
    data = os.environ.get("VIRTUALMLE_DATA_DIR", "")
    if not (Path(data) / "Beauty.txt").is_file():
        pytest.skip("Beauty.txt not in VIRTUALMLE_DATA_DIR")
    r = run_cli("--data", "beauty", "--slice-users", "2000", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2,000" in r.stdout and "Gini" in r.stdout and "test targets unseen" in r.stdout


def test_bad_format_name_is_one_line_exit_2(tmp_path):
    r = run_cli("--data", "beauty", "--format", "parquet", tmp_path=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "unknown data format 'parquet'" in line and "tsv" in line


def test_format_aliases_from_the_docs_are_accepted(tmp_path):
    # docs/data.md lists `inter` (= tsv) and `pairs` (= sasrec): the CLI takes them.
    inter = tmp_path / "log.txt"
    inter.write_text("user_id:token\titem_id:token\n" + "".join(f"u{u}\ti{k}\n" for u in range(3) for k in range(3)))
    pairs = tmp_path / "pairs.log"
    pairs.write_text("".join(f"{u} {k}\n" for u in range(1, 4) for k in range(1, 4)))
    for path, alias, fmt in ((inter, "inter", "tsv"), (pairs, "pairs", "sasrec")):
        r = run_cli("--data", str(path), "--format", alias, "--json", tmp_path=tmp_path)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["format"] == fmt and doc["users"] == 3 and doc["interactions"] == 9
