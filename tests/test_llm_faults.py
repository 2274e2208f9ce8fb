"""Issue 15, section 6: LLM endpoint faults as the user sees them, with real `virtualmle tune`
processes against a fake OpenAI-compatible endpoint on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
from fake_openai import fake_openai

from virtualmle.search.testing import AGENT_SPACE_YAML, TINY_SLICE_USERS

SPACE = AGENT_SPACE_YAML


def _tune(tmp: Path, llm: str, study: str, trials: int = 3, *extra: str) -> subprocess.CompletedProcess:
    (tmp / "agent.yaml").write_text(SPACE)
    argv = [sys.executable, "-m", "virtualmle", "tune", "--data", "beauty", "--trials", str(trials),
            "--space", str(tmp / "agent.yaml"), "--storage", f"sqlite:///{tmp / 's.db'}", "--study", study,
            "--memory", str(tmp / "memory"), "--run-dir", str(tmp / "run"), "--slice-users",
            str(TINY_SLICE_USERS), "--max-epochs", "1", "--device", "cpu", "--quiet", "--transfer", "none",
            "--llm", llm, *extra]
    return subprocess.run(argv, cwd=tmp, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": "sk-BADKEY-000000"})


def test_refused_key_is_named_and_not_retried(tmp_path):
    with fake_openai() as server:
        server.behaviour.status = 401
        res = _tune(tmp_path, server.spec(retries=3), "auth")
        sent = len(server.requests)
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("virtualmle: error:") and "HTTP 401" in last and "OPENAI_API_KEY" in last
    assert "resume" not in last and "Traceback" not in res.stderr
    assert "sk-BADKEY" not in res.stderr  # the server quoted it; the message masks it
    assert sent == 1  # neither the HTTP layer nor the agent asked again
    trials = optuna.load_study(study_name="auth", storage=f"sqlite:///{tmp_path / 's.db'}").get_trials()
    assert all(t.state.is_finished() for t in trials)  # what ran is recorded, nothing left RUNNING


def test_hanging_endpoint_stops_at_the_step_deadline_with_retry_lines(caplog):
    import logging
    import time

    import pytest
    from pydantic import BaseModel

    from virtualmle.errors import LLMUnavailableError
    from virtualmle.llm import make_llm

    class Reply(BaseModel):
        answer: str

    with fake_openai() as server:
        server.behaviour.hang_s = 30
        client = make_llm(server.spec(retries=5), timeout_s=1.0)  # default deadline: 2 x timeout + 8 s
        started = time.monotonic()
        with caplog.at_level(logging.WARNING), pytest.raises(LLMUnavailableError, match="step deadline") as info:
            client.structured([{"role": "user", "content": "hi"}], Reply)
        took = time.monotonic() - started
        sent = len(server.requests)
    assert took < 12  # deadline 2 x 1 s + 8 s; 6 attempts x 1 s + 15.5 s of backoff would be ~ 21 s
    assert 2 <= sent <= 4
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert retries and "timed out" in retries[0]  # the console says it is retrying
    assert server.base in str(info.value)


def test_garbage_replies_fallback_is_said_once_with_a_count(tmp_path):
    with fake_openai() as server:
        server.behaviour.garbage = True
        # llm mode: every step asks the LLM for the change (hybrid asks only on near ties)
        res = _tune(tmp_path, server.spec(retries=0), "garbage", 3, "--mode", "llm")
    assert res.returncode == 0, res.stderr[-2000:]
    said = [line for line in res.stderr.splitlines() if "replies were unusable" in line]
    trials = optuna.load_study(study_name="garbage", storage=f"sqlite:///{tmp_path / 's.db'}").get_trials()
    fallbacks = [t for t in trials if str((t.user_attrs.get("agent") or {}).get("fallback") or "").startswith("llm")]
    assert len(fallbacks) >= 2  # the LLM failed on more than one step ...
    assert len(said) == 1 and "fallbacks in this study: 1" in said[0]  # ... and the console says so once
