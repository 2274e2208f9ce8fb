"""`coerce_params`: the typed values of ``--set NAME=VALUE`` strings (validated by `TrainConfig`)."""

from __future__ import annotations

from typing import Any

from virtualmle.errors import ConfigError
from virtualmle.training.config import PARAM_NAMES, TrainConfig, _allowed

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def coerce_params(raw: dict[str, str]) -> dict[str, Any]:
    """Convert `--set NAME=VALUE` strings to typed values (validation happens in TrainConfig).

    Raises ConfigError for an unknown name or a value that is not of the parameter's type.
    """
    out: dict[str, Any] = {}
    for name, text in raw.items():
        if name not in TrainConfig.model_fields:
            raise ConfigError(f"unknown parameter {name!r} (known: {', '.join(PARAM_NAMES)})")
        ann = TrainConfig.model_fields[name].annotation
        value = str(text).strip()
        try:
            if ann is bool:
                low = value.lower()
                if low not in _TRUE | _FALSE:
                    raise ValueError
                out[name] = low in _TRUE
            elif ann is int:
                as_float = float(value)
                if not as_float.is_integer():
                    raise ValueError
                out[name] = int(as_float)
            elif ann is float:
                out[name] = float(value)
            else:
                out[name] = value
        except ValueError:
            raise ConfigError(
                f"parameter {name!r} = {value!r} is not allowed: expected {_allowed(name)}"
            ) from None
    return out
