"""Resumable training: the whole state of a run after each validation, written atomically.

A checkpoint holds the model, optimizer and scheduler, the three random streams (torch's global
one for dropout, the batch-order generator, the negatives generator), the epoch logs and the best
epoch's weights. Training resumed from it continues bit for bit where it stopped, so

- a long run killed mid-way (a session that ends, a crash) loses at most `eval_every` epochs;
- a trial screened at a few epochs is *promoted* to a longer run by raising `max_epochs` (and
  `patience`, `min_delta`) and continuing from its checkpoint instead of training again.

Only `max_epochs`, `patience`, `min_delta` and `eval_every` may differ between the run that wrote a checkpoint
and the one that resumes it; with a decaying learning-rate schedule `max_epochs` may not either
(the schedule's length is part of the trajectory). Anything else is a `CheckpointError`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from virtualmle.errors import ConfigError
from virtualmle.files import write_atomic

FORMAT = 1
# What a resumed run may change: how long it trains and how often it validates.
CHANGEABLE = frozenset({"max_epochs", "patience", "min_delta", "eval_every"})


class CheckpointError(ConfigError):
    """A checkpoint that belongs to another configuration or dataset, or cannot be read."""


def data_key(data: Any) -> dict[str, Any]:
    """What identifies the training data: sizes, interaction count and the file's digest."""
    return {
        "name": data.name,
        "users": int(data.num_users),
        "items": int(data.num_items),
        "interactions": int(sum(len(s) for s in data.sequences)),
        "sha256": data.meta.get("sha256"),
    }


def config_key(config: Any) -> dict[str, Any]:
    """The configuration a checkpoint is bound to: every parameter a resume may not change.

    A decaying learning-rate schedule binds its span (``schedule_horizon``), not ``max_epochs``:
    a screen of 5 epochs on a 100-epoch schedule continues as the 100-epoch run.
    """
    params = config.to_params()
    key = {k: v for k, v in sorted(params.items()) if k not in CHANGEABLE and k != "schedule_epochs"}
    if config.lr_schedule != "constant":
        key["schedule_horizon"] = config.schedule_horizon
    return key


@dataclass
class RunState:
    """Where a run stands after a validation."""

    epoch: int
    logs: list[dict[str, Any]]
    best_score: float
    best_epoch: int
    best_state: dict[str, torch.Tensor]
    since_best: int  # validations since patience was last reset
    ref_score: float  # the score that last reset it (`min_delta`)


def save(path: str | os.PathLike[str], *, config: Any, data: Any, state: RunState,
         model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
         rng: np.random.Generator, gen: torch.Generator) -> Path:
    """Write the checkpoint atomically (a kill mid-write leaves the previous one intact)."""
    blob = {
        "format": FORMAT,
        "config": config_key(config),
        "data": data_key(data),
        "epoch": state.epoch,
        "logs": state.logs,
        "best_score": state.best_score,
        "best_epoch": state.best_epoch,
        "best_state": state.best_state,
        "since_best": state.since_best,
        "ref_score": state.ref_score,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy_batches": _plain(rng.bit_generator.state),
            "negatives": gen.get_state(),
        },
    }
    buf = io.BytesIO()
    torch.save(blob, buf)
    return write_atomic(path, buf.getvalue())


def load(path: str | os.PathLike[str], *, config: Any, data: Any) -> dict[str, Any] | None:
    """The checkpoint at `path` for this configuration and data; None when there is none.

    Raises:
        CheckpointError: it cannot be read, or was written for another configuration or data.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is the same user-facing problem
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint of this version (format {blob.get('format')!r})")
    if blob["data"] != data_key(data):
        raise CheckpointError(f"{path}: written for other data ({blob['data']['name']}, "
                              f"{blob['data']['users']} users), not {data.name}")
    want = config_key(config)
    if "max_epochs" in blob["config"]:  # written before schedule_horizon: a decaying schedule's span
        blob["config"]["schedule_horizon"] = blob["config"].pop("max_epochs")
    # A parameter added after the checkpoint was written behaved as its default then.
    fields = type(config).model_fields
    blob["config"] = {**{k: fields[k].default for k in want.keys() - blob["config"].keys() if k in fields},
                      **blob["config"]}
    if blob["config"] != want:
        diff = sorted(k for k in set(want) | set(blob["config"]) if want.get(k) != blob["config"].get(k))
        why = (": a decaying lr_schedule's span (schedule_epochs, else max_epochs) must stay the same"
               if "schedule_horizon" in diff else "")
        raise CheckpointError(f"{path}: written for another configuration (differs in {', '.join(diff)}){why}")
    return blob


def restore(blob: dict[str, Any], *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any, rng: np.random.Generator, gen: torch.Generator) -> RunState:
    """Put a loaded checkpoint back into the run's objects; returns where the run stands."""
    model.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    if scheduler is not None and blob["scheduler"] is not None:
        scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["rng"]["torch"])
    rng.bit_generator.state = blob["rng"]["numpy_batches"]
    gen.set_state(blob["rng"]["negatives"])
    return RunState(epoch=blob["epoch"], logs=blob["logs"], best_score=blob["best_score"],
                    best_epoch=blob["best_epoch"], best_state=blob["best_state"],
                    since_best=blob["since_best"],
                    ref_score=blob.get("ref_score", blob["best_score"]))  # (older checkpoints: the best)


def _plain(value: Any) -> Any:
    """numpy's generator state as plain Python values (loadable with weights_only=True)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    return value
