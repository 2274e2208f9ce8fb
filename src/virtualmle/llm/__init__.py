"""The LLM layer: structured, schema-checked calls to an embedded or OpenAI-compatible model.

    from virtualmle.llm import make_llm
    client = make_llm(None, run_dir=run_dir, max_tokens_budget=200_000)   # embedded SmolLM2
    pick = client.structured(messages, PickSchema, seed=0, purpose="pick")
    client.usage   # Usage(calls, prompt_tokens, completion_tokens, seconds, cost_usd, cache_hits, ...)

See docs/llm.md for the `--llm` specs, dialects, the call log and the response cache.
"""

from virtualmle.llm.client import LLMClient, Usage, make_llm
from virtualmle.llm.log import log_summary, read_log
from virtualmle.llm.spec import LLMSpec, default_gguf_path, parse_spec

__all__ = [
    "LLMClient",
    "LLMSpec",
    "Usage",
    "default_gguf_path",
    "log_summary",
    "make_llm",
    "parse_spec",
    "read_log",
]
