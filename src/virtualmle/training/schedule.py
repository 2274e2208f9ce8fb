"""Learning-rate schedule: linear warm-up, then constant, linear or cosine decay, per step.

The factor multiplies the configured `lr`; it is a plain function of the step so the schedule
can be read (and tested) without an optimizer.
"""

from __future__ import annotations

import math

import torch

SCHEDULES: tuple[str, ...] = ("constant", "linear", "cosine")


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate for optimizer step `step` (0-based).

    Warm-up rises linearly from 1/(warmup_steps + 1) to 1 over `warmup_steps` steps; after it,
    `constant` stays at 1, `linear` and `cosine` decay to 0 at `total_steps` (the end of
    `max_epochs`: an early-stopped trial never reaches the bottom).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr_schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, *, schedule: str, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """A per-step scheduler for `optimizer`, or None when the rate never changes."""
    if schedule == "constant" and warmup_steps == 0:
        return None  # keeps the release's optimizer path bit-for-bit
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, schedule)
    )
