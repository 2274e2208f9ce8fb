"""The OpenAI-compatible backend end to end: the real llama-cpp-python server on 127.0.0.1,
serving the same SmolLM2 GGUF, driven through the official `openai` SDK."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from virtualmle.errors import LLMAuthError, LLMError, LLMUnavailableError
from virtualmle.llm import log_summary, make_llm, read_log

from llama_server import free_port as _free_port, llama_server

pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")

MESSAGES = [
    {"role": "system", "content": "You tune a SASRec recommender. Answer in JSON."},
    {"role": "user", "content": "Propose a dropout rate and give a short reason."},
]


class Dropout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dropout: float
    reason: str = Field(max_length=40)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a running `python -m llama_cpp.server`; the process is always terminated."""
    with llama_server(tmp_path_factory.mktemp("llama_server") / "server.log") as (base, _):
        yield base


def test_structured_output_detects_json_object_dialect(server: str, tmp_path: Path) -> None:
    client = make_llm(f"{server}#smollm2", run_dir=tmp_path)
    assert client.dialect is None  # auto: decided on the first call
    obj = client.structured(MESSAGES, Dropout, max_tokens=64, purpose="dropout")

    assert isinstance(obj, Dropout)
    # llama-cpp-python's server rejects `json_schema` (HTTP 500); the client falls back and keeps
    # the choice for later calls.
    assert client.dialect == "json_object"
    entries = read_log(tmp_path / "llm_log.jsonl")
    assert len(entries) == 1 and entries[0]["ok"] is True
    assert entries[0]["dialect"] == "json_object" and entries[0]["backend"] == "http"
    assert Dropout.model_validate_json(entries[0]["response"]) == obj
    assert entries[0]["cost_usd"] == 0.0  # a loopback endpoint is self-hosted


def test_token_accounting_over_http(server: str, tmp_path: Path) -> None:
    client = make_llm(f"{server}?dialect=json_object#smollm2", run_dir=tmp_path)
    client.structured(MESSAGES, Dropout, max_tokens=64)
    client.structured(MESSAGES[1:], Dropout, max_tokens=64, seed=1)
    client.structured(MESSAGES, Dropout, max_tokens=64)  # cache hit: no tokens
    usage = client.usage
    summary = log_summary(read_log(tmp_path / "llm_log.jsonl"))

    assert usage.calls == summary["calls"] == 3
    assert usage.cache_hits == summary["cache_hits"] == 1
    assert usage.prompt_tokens == summary["prompt_tokens"] > 0
    assert usage.completion_tokens == summary["completion_tokens"] > 0
    assert usage.cost_usd == 0.0 and usage.cost_known


def test_explicit_unsupported_dialect_fails_at_once_with_a_hint(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_llm(f"{server}?dialect=json_schema#smollm2")
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(
            LLMUnavailableError, match="rejects response_format dialect 'json_schema'"
        ) as info,
    ):
        client.structured(MESSAGES, Dropout, max_tokens=32)
    assert "?dialect=" in str(info.value)
    assert not [r for r in caplog.records if "retry" in r.getMessage()]


def test_timeout_is_retried_then_reported(server: str, caplog: pytest.LogCaptureFixture) -> None:
    client = make_llm(f"{server}?retries=1#smollm2", timeout_s=0.001)
    with caplog.at_level(logging.WARNING), pytest.raises(LLMUnavailableError) as info:
        client.structured(MESSAGES, Dropout, max_tokens=32)
    message = str(info.value)
    assert "timed out after 0.001 s" in message and "(2 attempts)" in message
    assert server in message
    assert len([r for r in caplog.records if "retry 1/1" in r.getMessage()]) == 1


def test_non_transient_http_error_surfaces_without_retries(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = server.removesuffix("/v1")
    client = make_llm(f"{root}/no-such-prefix#smollm2")
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(LLMUnavailableError, match="HTTP 404") as info,
    ):
        client.structured(MESSAGES, Dropout, max_tokens=32)
    assert f"{root}/no-such-prefix" in str(info.value)
    assert not [r for r in caplog.records if "retry" in r.getMessage()]


def test_unreachable_port_gives_one_clear_line() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    client = make_llm(f"{url}?retries=1#smollm2")
    started = time.monotonic()
    with pytest.raises(LLMUnavailableError) as info:
        client.structured(MESSAGES, Dropout, max_tokens=32)
    message = str(info.value)
    assert message.startswith(f"LLM endpoint {url} unreachable")
    assert "(2 attempts)" in message and "\n" not in message
    assert time.monotonic() - started >= 0.5  # one backoff pause between the two attempts


# --- Status codes llama.cpp's server does not produce on demand (429, 503, 401) --------------
# A scripted endpoint: a real HTTP server on 127.0.0.1 that answers each request with the next
# (status, headers, body) of its script, standing in for a hosted API we cannot reach offline.


def _completion_body(content: str) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


class _ScriptedHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, headers, body = self.server.script.pop(0)  # type: ignore[attr-defined]
        if callable(body):
            body = body(self)
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[str, list]]:
    """(base URL, script list) of a scripted endpoint; append responses to the list."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedHandler)
    httpd.script = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", httpd.script  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_429_and_503_are_retried_with_backoff(
    scripted: tuple[str, list], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, script = scripted
    script += [
        (429, {"Retry-After": "0.1"}, {"error": {"message": "slow down"}}),
        (503, {}, {"error": {"message": "overloaded"}}),
        (200, {}, _completion_body('{"dropout": 0.1, "reason": "less overfitting"}')),
    ]
    client = make_llm(f"{url}?dialect=json_schema#scripted", run_dir=tmp_path)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        obj = client.structured(MESSAGES, Dropout)
    assert obj == Dropout(dropout=0.1, reason="less overfitting")
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and "HTTP 429" in retries[0] and "HTTP 503" in retries[1]
    assert time.monotonic() - started >= 0.1 + 1.0  # Retry-After, then the second backoff step
    assert not script  # exactly three requests
    assert (client.usage.prompt_tokens, client.usage.completion_tokens) == (11, 7)


@pytest.mark.parametrize(
    ("status", "error", "match"),
    [
        (400, LLMError, "HTTP 400: .*context length exceeded"),
        (401, LLMAuthError, r"HTTP 401 \(refused the API key\): check OPENAI_API_KEY"),
    ],
)
def test_client_errors_surface_at_once_without_the_key(
    scripted: tuple[str, list],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    status: int,
    error: type[Exception],
    match: str,
) -> None:
    marker = "sk-MARKER-echoed-by-server-77aa"
    monkeypatch.setenv("OPENAI_API_KEY", marker)
    url, script = scripted
    # The server echoes the Authorization header back, as some proxies do in their errors.
    echo = lambda h: {
        "error": {"message": f"context length exceeded; got {h.headers['Authorization']}"}
    }  # noqa: E731
    script.append((status, {}, echo))
    client = make_llm(f"{url}?dialect=json_schema#scripted")
    with caplog.at_level(logging.WARNING), pytest.raises(error, match=match) as info:
        client.structured(MESSAGES, Dropout)
    assert type(info.value) is error
    assert marker not in str(info.value) and url in str(info.value)
    assert not [r for r in caplog.records if "retry" in r.getMessage()]
    assert not script
