"""A fake OpenAI-compatible endpoint for tests: a real HTTP server on 127.0.0.1 in a thread.

It answers `/v1/chat/completions` by the requested schema's name (the ``json_schema`` dialect
sends it), with replies the agent's schemas accept, and can misbehave on demand: echo the
Authorization header it received into every text field (a leaking proxy), answer garbage, hang,
answer an HTTP status, or delay one kind of request (to hold a study inside a step). Every
request's headers and body are kept in ``requests`` for assertions.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    """What the endpoint does; tests change it between runs (the server reads it per request).

    Attributes:
        echo_auth: put the received Authorization header into every free-text field.
        garbage: reply with text that is not JSON.
        hang_s: sleep this long before answering (a hanging endpoint).
        status: answer every request with this HTTP status and an error body.
        delay: schema name -> seconds to sleep before answering that kind of request.
        insight_ops: the reflection's insight operations (e.g. a REMOVE of ``ins-1``).
    """

    echo_auth: bool = False
    garbage: bool = False
    hang_s: float = 0.0
    status: int | None = None
    delay: dict[str, float] = field(default_factory=dict)
    insight_ops: list[dict[str, str]] = field(default_factory=list)


def _body(content: str) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def _first_choice(schema: dict[str, Any]) -> str:
    prop = schema.get("properties", {}).get("choice", {})
    if "enum" in prop:
        return prop["enum"][0]
    return prop.get("const", "A")


def reply_for(name: str, schema: dict[str, Any], b: Behaviour, auth: str) -> dict[str, Any]:
    """A reply the agent's schema ``name`` accepts; text fields carry ``auth`` when echoing."""
    said = f"saw {auth}" if b.echo_auth else "lower dropout"
    if name == "CandidatePick":
        return {"hypothesis": said[:100], "mechanism": said[:80], "risk": "none", "choice": _first_choice(schema)}
    if name == "Reflection":
        return {"verdict": "inconclusive", "attribution": said[:100],
                "rule": {"text": f"rule {said}"[:80], "condition": "", "param": "none", "direction": "none"},
                "next_direction": said[:40], "insight_ops": list(b.insight_ops)}
    return {}


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        server: FakeServer = self.server.owner  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.loads(raw or b"{}")
        auth = self.headers.get("Authorization", "")
        server.requests.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
        b = server.behaviour
        fmt = (body.get("response_format") or {}).get("json_schema") or {}
        name = fmt.get("name", "")
        if b.hang_s:
            time.sleep(b.hang_s)
        time.sleep(b.delay.get(name, 0.0))
        if b.status is not None:
            self._send(b.status, {"error": {"message": f"refused (key was {auth})"}})
            return
        text = "I think the answer is yes" if b.garbage else json.dumps(reply_for(name, fmt.get("schema", {}), b, auth))
        self._send(200, _body(text))

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)

    def log_message(self, *args: object) -> None:
        pass


class FakeServer:
    """The running endpoint: ``url`` (an ``--llm`` spec), ``behaviour``, ``requests``."""

    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self.requests: list[dict[str, Any]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self  # type: ignore[attr-defined]
        self.base = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def spec(self, **query: Any) -> str:
        """The ``--llm`` value for this endpoint (json_schema dialect, optional query options)."""
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"{self.base}?dialect=json_schema{extra}#fake"


@contextlib.contextmanager
def fake_openai() -> Iterator[FakeServer]:
    """Run a `FakeServer` in a thread for the duration of the block."""
    server = FakeServer()
    thread = threading.Thread(target=server._httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server._httpd.shutdown()
        server._httpd.server_close()
