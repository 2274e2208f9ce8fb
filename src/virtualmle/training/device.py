"""The one rule for `--device` in every command: ``auto`` (default), ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

from virtualmle.errors import ConfigError

DEFAULT_DEVICE = "auto"


def resolve_device(device: str | None) -> str:
    """A torch device string for `device`; ``auto`` picks cuda when available, else cpu.

    Raises:
        ConfigError: an unknown device name, or cuda asked for on a machine without it.
    """
    import torch

    name = (device or DEFAULT_DEVICE).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ConfigError(f"--device {device!r}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine")
    if index and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return name
