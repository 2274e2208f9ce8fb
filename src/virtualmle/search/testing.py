"""Helpers for tests and demos of the search: a tiny space and tiny fidelity settings.

Shipped in the package (as Optuna ships ``optuna.testing``) so every test suite that drives a
search, including the agent's, uses the same small, fast settings on the real data.
"""

from __future__ import annotations

from pathlib import Path

# A 3 x 2 grid over hidden and lr with a heads constraint that some draws break; trains in about
# a second per epoch on 600 users of Beauty.
TINY_SPACE_YAML = """\
model: sasrec
description: tiny test space
grid: [hidden, lr]
fixed: {max_len: 20}
constraints:
  - divisible: [hidden, heads]
params:
  hidden:    {type: categorical, choices: [16, 24, 32], default: 16, grid: [16, 24, 32]}
  heads:     {type: categorical, choices: [1, 2, 3], default: 1, grid: [1, 2]}
  lr:        {type: float, low: 1.0e-3, high: 1.0e-2, log: true, default: 3.0e-3, grid: [1.0e-3, 1.0e-2]}
  negatives: {type: int, low: 8, high: 64, log: true, default: 16, grid: [8, 16, 32]}
"""

# Fidelity for tests: few users, one or two epochs.
# Two ordered axes the agent can move along, for tests that run a whole agent study in seconds.
AGENT_SPACE_YAML = """\
model: sasrec
fixed: {max_len: 20, batch_size: 256, patience: 1, heads: 1}
params:
  hidden:  {type: categorical, choices: [16, 24, 32], default: 16, grid: [16, 24, 32]}
  dropout: {type: float, low: 0.0, high: 0.5, default: 0.2, grid: [0.1, 0.2, 0.3]}
"""

TINY_SLICE_USERS = 600
TINY_MAX_EPOCHS = 1
TINY_FIXED = {"batch_size": 256, "patience": 1}


def write_tiny_space(directory: Path) -> Path:
    """Write `TINY_SPACE_YAML` to ``directory/tiny.yaml`` and return its path."""
    path = Path(directory) / "tiny.yaml"
    path.write_text(TINY_SPACE_YAML)
    return path
