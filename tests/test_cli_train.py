"""`virtualmle train` through a real subprocess: success document and the error paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DOC_KEYS = {"config", "profile", "num_params", "epochs", "best_epoch", "valid", "test", "seconds",
            "peak_memory_mb", "stopped"}
FAST = ["--slice-users", "500", "--max-epochs", "1", "--set", "hidden=16", "--set", "negatives=50", "--quiet"]


def _data_dir() -> str:
    data = os.environ.get("VIRTUALMLE_DATA_DIR", "")
    if not (Path(data) / "Beauty.txt").is_file():
        pytest.skip("Beauty.txt not in VIRTUALMLE_DATA_DIR")
    return data


def _run(args: list[str], data_dir: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VIRTUALMLE_DATA_DIR": data_dir}
    return subprocess.run([sys.executable, "-m", "virtualmle", "train", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


def test_success_writes_the_documented_json(tmp_path):
    out = tmp_path / "sub" / "result.json"
    out.parent.mkdir()
    proc = _run(["--data", "beauty", "--model", "hstu", *FAST, "--seed", "3", "--set", "lr=0.001",
                 "--output", str(out)], _data_dir(), tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert set(doc) >= DOC_KEYS
    assert doc["config"]["model"] == "hstu" and doc["config"]["lr"] == 0.001 and doc["config"]["seed"] == 3
    assert doc["config"]["hidden"] == 16 and doc["config"]["dropout"] == 0.5  # HSTU default kept
    assert doc["profile"]["users"] == 500 and len(doc["epochs"]) == 1
    assert 0.0 <= doc["test"]["ndcg@10"] <= doc["test"]["hr@10"] <= 1.0
    assert [p.name for p in out.parent.iterdir()] == ["result.json"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # the umask's mode, not mkstemp's 0600


def test_config_file_is_merged_under_set(tmp_path):
    cfg = tmp_path / "trial.yaml"
    cfg.write_text("model: sasrec\nhidden: 24\nheads: 2\nloss: bce\n")
    out = tmp_path / "r.json"
    proc = _run(["--data", "beauty", "--config", str(cfg), *FAST, "--output", str(out)], _data_dir(), tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["config"]["hidden"] == 16  # --set wins over the file
    assert (doc["config"]["heads"], doc["config"]["loss"], doc["config"]["negatives"]) == (2, "bce", 50)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "colour=red"], "virtualmle: error: unknown parameter 'colour'"),
        (["--set", "dropout=1.5"], "virtualmle: error: parameter 'dropout' = 1.5 is not allowed: expected float, 0.0 <= dropout < 1.0"),
        (["--set", "hidden=big"], "virtualmle: error: parameter 'hidden' = 'big' is not allowed"),
        (["--set", "lr"], "virtualmle: error: --set expects NAME=VALUE, got 'lr'"),
    ],
)
def test_bad_parameters_fail_with_one_line_and_no_file(tmp_path, extra, message):
    out = tmp_path / "result.json"
    proc = _run(["--data", "beauty", *extra, "--output", str(out)], _data_dir(), tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_missing_dataset_fails_with_one_line_naming_the_file(tmp_path):
    empty = tmp_path / "nodata"
    empty.mkdir()
    out = tmp_path / "result.json"
    proc = _run(["--data", "beauty", "--output", str(out)], str(empty), tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Beauty.txt" in lines[0] and str(empty) in lines[0], proc.stderr
    assert not out.exists()


def test_bad_config_file_fails_with_one_line(tmp_path):
    cfg = tmp_path / "trial.yaml"
    cfg.write_text("- just\n- a list\n")
    proc = _run(["--data", "beauty", "--config", str(cfg)], _data_dir(), tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"virtualmle: error: {cfg}: expected a mapping of parameter names to values"


def test_help_lists_every_parameter_with_defaults(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "virtualmle", "train", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    from virtualmle.training import PARAM_NAMES

    for name in PARAM_NAMES:
        assert f"\n  {name} " in proc.stdout, name
    for option in ("--data", "--model", "--set", "--config", "--max-epochs", "--seed", "--output",
                   "--slice-users", "--device", "--threads", "--quiet"):
        assert option in proc.stdout
    assert "temperature" in proc.stdout and "1.0 | 0.05" in proc.stdout


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (".", "is a directory; give a file name"),
        ("missing/dir/r.json", "does not exist"),
    ],
)
def test_unwritable_output_fails_before_training(tmp_path, output, message):
    # Checked before the data is even read: a long run never dies at the end on its output path.
    proc = _run(["--data", "beauty", *FAST, "--output", output], _data_dir(), tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("virtualmle: error: --output") and message in line
    assert not (tmp_path / "missing").exists() and list(tmp_path.iterdir()) == []


def test_unknown_device_is_one_line(tmp_path):
    proc = _run(["--data", "beauty", *FAST, "--device", "tpu"], _data_dir(), tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "virtualmle: error: --device 'tpu': use auto, cpu, cuda or cuda:N"


def test_device_defaults_to_auto_like_search_and_tune(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "virtualmle", "train", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert "(default auto" in " ".join(proc.stdout.split())


def test_save_refuses_a_directory_that_is_not_a_model(tmp_path):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    proc = _run(["--data", "beauty", *FAST, "--save", str(other)], _data_dir(), tmp_path)
    assert proc.returncode == 2
    assert "not a saved model" in proc.stderr and (other / "todo.txt").read_text() == "keep me"
