"""The options search / tune / bench share (cli/options.py), through the real CLI in a subprocess:
the bugs their drift hid. A real HTTP server on 127.0.0.1 stands in for an OpenAI-compatible
endpoint, so the tests see what reaches the LLM without a model."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

SPACE = """\
model: sasrec
description: tiny space for option tests
grid: [lr]
fixed: {max_len: 20, negatives: 16, batch_size: 256, heads: 1, patience: 1, hidden: 16}
params:
  dropout: {type: float, low: 0.0, high: 0.5, default: 0.2, grid: [0.1, 0.2, 0.3]}
  lr:      {type: float, low: 1.0e-4, high: 1.0e-2, log: true, default: 1.0e-3, grid: [3.0e-4, 1.0e-3, 3.0e-3]}
"""
needs_beauty = pytest.mark.skipif(not (Path(os.environ.get("VIRTUALMLE_DATA_DIR", "")) / "Beauty.txt").exists(),
                                  reason="no Beauty.txt in VIRTUALMLE_DATA_DIR")


class _Endpoint:
    """An OpenAI-compatible /chat/completions that answers ``{}`` and reports ``prompt_tokens``
    per call, after ``delay`` seconds; it counts the requests it got."""

    def __init__(self, prompt_tokens: int = 600, delay: float = 0.0) -> None:
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests += 1
                time.sleep(delay)
                body = json.dumps({
                    "id": "x", "object": "chat.completion", "created": 0, "model": "fake",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "{}"}}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1,
                              "total_tokens": prompt_tokens + 1}}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VIRTUALMLE_MEMORY_DIR": str(cwd / "memory")}
    env.pop("VIRTUALMLE_LLM", None)
    return subprocess.run([sys.executable, "-m", "virtualmle", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _search(tmp: Path, method: str, *extra: str) -> subprocess.CompletedProcess:
    (tmp / "tiny.yaml").write_text(SPACE)
    return _cli("search", "--method", method, "--data", "beauty", "--trials", "2", "--slice-users", "500",
                "--max-epochs", "1", "--space", str(tmp / "tiny.yaml"), "--storage", f"sqlite:///{tmp / 's.db'}",
                "--study", "s", "--run-dir", str(tmp / "run"), "--quiet", *extra, cwd=tmp)


@pytest.mark.parametrize("bad, named", [(("--metric", "foo"), "'foo'"), (("--screen-cost", "-1"), "--screen-cost"),
                                       (("--confirm-patience", "-1"), "--confirm-patience"),
                                       (("--screen-repeat", "-1"), "--screen-repeat")])
def test_tune_refuses_a_bad_option_up_front(tmp_path: Path, bad: tuple[str, str], named: str) -> None:
    proc = _cli("tune", "--data", "beauty", *bad, "--trials", "1", "--storage",
                f"sqlite:///{tmp_path / 't.db'}", "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("virtualmle: error:") and named in err[0]
    assert not (tmp_path / "t.db").exists() and not (tmp_path / "run").exists()  # no budget spent


def test_search_and_tune_share_defaults_and_options() -> None:
    import argparse

    from virtualmle.cli import search, tune

    parsers = {}
    for mod in (search, tune):
        sub = argparse.ArgumentParser().add_subparsers()
        mod.register(sub)
        parsers[mod.__name__] = next(iter(sub.choices.values()))
    s = parsers["virtualmle.cli.search"].parse_args(["--method", "tpe", "--data", "beauty"])
    t = parsers["virtualmle.cli.tune"].parse_args(["--data", "beauty", "--set", "patience=2", "--prune"])
    shared = {k for k in vars(s) if k not in ("method", "func")}
    assert shared <= set(vars(t))
    assert {k: vars(s)[k] for k in shared - {"sets", "prune"}} == {k: vars(t)[k] for k in shared - {"sets", "prune"}}
    assert t.sets == ["patience=2"] and t.prune == "median" and s.prune is None
    # The trial budget is resolved with --budget: 30 without it, no trial limit with it alone.
    from virtualmle.cli.options import UNLIMITED_TRIALS, check_run_options

    check_run_options(s)
    assert s.trials == 30 and s.time_budget is None
    b = parsers["virtualmle.cli.tune"].parse_args(["--data", "beauty", "--budget", "45m", "--prune", "hyperband"])
    check_run_options(b)
    assert b.trials == UNLIMITED_TRIALS and b.time_budget == 2700.0 and b.prune == "hyperband"


@pytest.mark.slow
@needs_beauty
def test_search_method_agent_uses_llm_and_max_llm_tokens(tmp_path: Path) -> None:
    """Trial 1 is reflected on (and perhaps picked by) the LLM: the calls go to --llm, and the
    first reply (600 tokens) crosses --max-llm-tokens 500."""
    endpoint = _Endpoint(prompt_tokens=600)
    try:
        proc = _search(tmp_path, "agent", "--llm", f"{endpoint.url}?dialect=none&retries=0#fake",
                       "--max-llm-tokens", "500")
    finally:
        endpoint.close()
    assert endpoint.requests >= 1, proc.stderr[-2000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "llm_log.jsonl").read_text().splitlines()]
    assert len(log) == endpoint.requests and all(e["backend"] == "http" for e in log)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    attrs = json.dumps([t.user_attrs for t in optuna.load_study(study_name="s", storage=storage).trials])
    # the budget stops the pick (exit 2) or is recorded by the reflection (exit 0): either way it is 500
    assert "601 of 500 tokens used" in proc.stderr + attrs


@pytest.mark.slow
@needs_beauty
def test_search_method_opro_takes_llm_timeout_and_cache_dir(tmp_path: Path) -> None:
    endpoint = _Endpoint(prompt_tokens=10, delay=3.0)
    try:
        proc = _search(tmp_path, "opro", "--llm", f"{endpoint.url}?dialect=none&retries=0#fake",
                       "--llm-timeout", "1", "--llm-cache-dir", str(tmp_path / "cache"))
    finally:
        endpoint.close()
    assert proc.returncode == 2, proc.stderr[-2000:]  # a 3 s reply is a timeout under --llm-timeout 1
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("virtualmle: error:") and "unavailable" in err[-1]
    assert (tmp_path / "cache" / "llm_cache.sqlite").is_file()
    assert not (tmp_path / "run" / "llm_cache.sqlite").exists()


def test_llm_options_reach_the_client_of_every_llm_method(tmp_path: Path) -> None:
    import argparse

    from virtualmle.cli.options import add_run_options, llm_options
    from virtualmle.methods import LLM_METHODS, get_method
    from virtualmle.search.space import load_space

    p = argparse.ArgumentParser()
    add_run_options(p)
    args = p.parse_args(["--llm", "gguf:/nowhere.gguf", "--llm-ctx", "512", "--llm-threads", "1",
                         "--llm-timeout", "7", "--llm-cache-dir", str(tmp_path), "--max-llm-tokens", "99"])
    for name in sorted(LLM_METHODS):
        method = get_method(name, space=load_space("sasrec"), seed=0, llm=llm_options(args))
        o = method.llm.options
        assert (o.spec, o.n_ctx, o.n_threads, o.timeout_s, o.cache_dir, o.max_tokens_budget) == (
            "gguf:/nowhere.gguf", 512, 1, 7.0, tmp_path, 99), name
