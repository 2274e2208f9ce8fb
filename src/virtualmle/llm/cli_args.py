"""The LLM options every LLM-driven command shares (`tune`, `search --method agent|opro`, ...).

from virtualmle.llm.cli_args import add_llm_arguments, make_llm_from_args
add_llm_arguments(parser)               # in the command's register()
client = make_llm_from_args(args, run_dir)   # in its func(args)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from virtualmle.llm.client import LLMClient, make_llm

LLM_ENV = "VIRTUALMLE_LLM"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, not {value}")
    return value


def add_llm_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--llm`, `--max-llm-tokens` and the model/endpoint tuning options to `parser`."""
    group = parser.add_argument_group("LLM")
    group.add_argument(
        "--llm",
        metavar="SPEC",
        default=None,
        help=(
            "which model drives the agent: 'embedded' (default: SmolLM2-135M-Instruct in-process, "
            "offline), 'gguf:/path/model.gguf', 'openai:MODEL' (uses OPENAI_API_KEY, "
            "OPENAI_BASE_URL) or 'http://HOST:PORT/v1#MODEL' for vLLM, Ollama, llama.cpp server, "
            "DeepSeek...; add '?dialect=json_schema|json_object|none' if auto-detection fails. "
            f"Default from ${LLM_ENV}."
        ),
    )
    group.add_argument(
        "--max-llm-tokens",
        metavar="N",
        type=_positive_int,
        default=None,
        help="stop the study cleanly once the LLM has used N prompt+completion tokens "
        "(cached replays are free)",
    )
    group.add_argument(
        "--llm-timeout",
        metavar="S",
        type=_positive_float,
        default=60.0,
        help="seconds per HTTP request before it counts as a (retried) timeout (default 60)",
    )
    group.add_argument(
        "--llm-ctx",
        metavar="N",
        type=_positive_int,
        default=4096,
        help="context size for local GGUF models (default 4096)",
    )
    group.add_argument(
        "--llm-threads",
        metavar="N",
        type=_positive_int,
        default=None,
        help="CPU threads for local GGUF models (default: llama.cpp's choice)",
    )
    group.add_argument(
        "--llm-cache-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="where llm_cache.sqlite lives (default: the run directory); share it across runs "
        "to replay identical requests for free",
    )


def make_llm_from_args(args: argparse.Namespace, run_dir: Path | None) -> LLMClient:
    """The client described by the options `add_llm_arguments` added."""
    return make_llm(
        getattr(args, "llm", None) or os.environ.get(LLM_ENV) or None,
        run_dir=run_dir,
        max_tokens_budget=getattr(args, "max_llm_tokens", None),
        cache_dir=getattr(args, "llm_cache_dir", None),
        timeout_s=getattr(args, "llm_timeout", 60.0),
        n_ctx=getattr(args, "llm_ctx", 4096),
        n_threads=getattr(args, "llm_threads", None),
    )
