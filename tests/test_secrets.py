"""Issue 15, section 3: a key the endpoint echoes back is stored, shown, cached and sent nowhere,
and trial worker processes never get it. Real `virtualmle tune` against a fake OpenAI-compatible
endpoint on 127.0.0.1 that echoes the Authorization header it receives into every reply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fake_openai import fake_openai

from virtualmle.search.executor import LocalExecutor, TrialSpec
from virtualmle.search.testing import AGENT_SPACE_YAML, TINY_FIXED, TINY_SLICE_USERS
from virtualmle.search.worker import TEST_FAULT_ENV

CANARY = "sk-CANARY-123456"
SPACE = AGENT_SPACE_YAML


def _files_with(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_echoed_key_is_redacted_everywhere(tmp_path):
    (tmp_path / "agent.yaml").write_text(SPACE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": CANARY}
    with fake_openai() as server:
        server.behaviour.echo_auth = True
        argv = [sys.executable, "-m", "virtualmle", "tune", "--data", "beauty", "--trials", "3",
                "--space", str(tmp_path / "agent.yaml"), "--storage", f"sqlite:///{tmp_path / 's.db'}",
                "--study", "leak", "--memory", str(tmp_path / "memory"), "--run-dir", str(tmp_path / "run"),
                "--slice-users", str(TINY_SLICE_USERS), "--max-epochs", "1", "--device", "cpu",
                "--transfer", "none", "--llm", server.spec(retries=0)]
        res = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        requests = list(server.requests)
    assert res.returncode == 0, res.stderr[-2000:]
    # the endpoint did receive the key and echoed it (so the test can fail) ...
    assert requests and all(r["headers"]["authorization"] == f"Bearer {CANARY}" for r in requests)
    assert any(r["body"]["response_format"]["json_schema"]["name"] == "Reflection" for r in requests)
    # ... and it is nowhere: storage, run dir (LLM log and cache, trial files), memory bank, console
    assert _files_with(tmp_path, CANARY.encode()) == []
    assert CANARY not in res.stdout + res.stderr
    for r in requests:  # never sent back out inside a later prompt
        assert CANARY not in json.dumps(r["body"])
    log = (tmp_path / "run" / "llm_log.jsonl").read_text()
    assert "saw Bearer ***" in log  # the echo was there, masked


def test_worker_process_environment_has_no_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("HF_TOKEN", "hf-CANARY-7890")
    ex = LocalExecutor(1, device="cpu", env={TEST_FAULT_ENV: "hang@0"})
    spec = TrialSpec(number=0, data="beauty", config={"model": "sasrec", "hidden": 16, **TINY_FIXED},
                     trial_dir=str(tmp_path / "t"), slice_users=TINY_SLICE_USERS, device="cpu", timeout=60)
    future = ex.submit(spec)
    try:
        deadline = time.monotonic() + 30
        while not ex._procs and time.monotonic() < deadline:
            time.sleep(0.05)
        proc = next(iter(ex._procs.values()))
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
    finally:
        ex.cancel_all()
        future.result(timeout=60)
        ex.shutdown()
    names = {e.split(b"=", 1)[0] for e in environ if e}
    assert b"VIRTUALMLE_TORCH_THREADS" in names and TEST_FAULT_ENV.encode() in names  # it is the worker's
    assert b"OPENAI_API_KEY" not in names and b"HF_TOKEN" not in names
    assert not any(b"CANARY" in e for e in environ)
