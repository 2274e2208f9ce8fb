"""Backbones: SASRec and HSTU share embedding, preprocessing and scoring; blocks differ.

`build_model(name, cfg)` looks the encoder block up in `BLOCKS`; adding a backbone is one
`register_block` call.
"""

from __future__ import annotations

from collections.abc import Callable

from virtualmle.errors import ConfigError
from virtualmle.models.base import EncoderBlock, ModelConfig, SequentialRecommender
from virtualmle.models.hstu import HSTUBlock
from virtualmle.models.sasrec import SASRecBlock

BLOCKS: dict[str, type[EncoderBlock]] = {}


def register_block(name: str) -> Callable[[type[EncoderBlock]], type[EncoderBlock]]:
    """Class decorator / function registering an encoder block under a model name."""

    def deco(cls: type[EncoderBlock]) -> type[EncoderBlock]:
        BLOCKS[name] = cls
        return cls

    return deco


register_block("sasrec")(SASRecBlock)
register_block("hstu")(HSTUBlock)


def build_model(name: str, cfg: ModelConfig) -> SequentialRecommender:
    """A fresh backbone `name` ("sasrec", "hstu") with architecture `cfg`."""
    try:
        block = BLOCKS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}: use one of {', '.join(BLOCKS)}") from None
    return SequentialRecommender(cfg, block)


__all__ = [
    "BLOCKS",
    "EncoderBlock",
    "HSTUBlock",
    "ModelConfig",
    "SASRecBlock",
    "SequentialRecommender",
    "build_model",
    "register_block",
]
