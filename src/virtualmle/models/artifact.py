"""The saved model: one directory holding trained weights and everything needed to use them.

Layout (``ARTIFACT_VERSION`` 1)::

    DIR/model.json    what the model is: format name and version, the resolved trial config
                      (flat `TrainConfig` parameters), num_items, the data it was trained on
                      (spec, name, file, format options, sha256 fingerprint, slice_users), the
                      metrics (valid / test of the best epoch), the evaluation protocol, the
                      trial number when it came from a study, and package / torch / python versions
    DIR/weights.pt    the best-validation ``state_dict``, written with ``torch.save`` and read
                      back with ``torch.load(weights_only=True)``: tensors only, never pickled code
    DIR/ids.json      ``{"items": [...], "users": [...]}``: the file's id of model item k is
                      ``items[k - 1]``; ``users`` are the training users in model order
    DIR/priors.npz    only when the config weights a train-split score prior: the prior tables
                      (`virtualmle.training.priors`), plain arrays read with allow_pickle=False

A directory is written next to its final place and renamed into it, so a reader never sees a
half-written model; replacing an existing model keeps the old one until the new one is complete.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from virtualmle.errors import ConfigError

FORMAT = "virtualmle-model"
ARTIFACT_VERSION = 1
META_FILE, WEIGHTS_FILE, IDS_FILE, PRIORS_FILE = "model.json", "weights.pt", "ids.json", "priors.npz"


def protocol(eval_mask: str) -> dict[str, Any]:
    """The evaluation protocol stored in model.json; `eval_mask` is the resolved mask
    (`virtualmle.training.evaluation`): which history items evaluation and `recommend` exclude."""
    return {"split": "leave-one-out", "ranking": "full", "eval_mask": eval_mask,
            "history_masked": eval_mask != "none"}


def _ids(values: np.ndarray | None, count: int) -> list[str]:
    """The file's ids as strings; ``1..count`` when the data carried none."""
    if values is None:
        return [str(i) for i in range(1, count + 1)]
    return [str(v) for v in values]


def save_model(
    directory: Path,
    module: torch.nn.Module,
    *,
    config: dict[str, Any],
    data: Any,
    data_info: dict[str, Any],
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
    eval_mask: str = "history",
    priors: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write the model directory atomically (see the module docstring); returns it.

    Args:
        directory: the model directory to create or replace.
        module: the trained `SequentialRecommender` holding the weights to keep.
        config: the resolved flat trial parameters.
        data: the `SequenceData` it was trained on (ids, fingerprint, sizes).
        data_info: how the data was read: ``spec``, ``slice_users``, ``options`` (format, columns).
        metrics: ``valid``, ``test``, ``best_epoch`` and the like.
        extra: more JSON-ready fields for model.json (e.g. the trial number).
        eval_mask: the resolved evaluation mask the metrics were measured with.
        priors: the train-split prior tables as arrays (written to priors.npz), or None.
    """
    from virtualmle import __version__

    directory = Path(directory).absolute()
    parent = directory.parent
    if not parent.is_dir():
        raise ConfigError(f"cannot save the model to {directory}: directory {parent} does not exist")
    meta = {
        "format": FORMAT,
        "version": ARTIFACT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": dict(config),
        "num_items": int(data.num_items),
        "num_users": int(data.num_users),
        "data": {
            **data_info,
            "name": data.name,
            "source": str(Path(data.source).absolute()) if data.source is not None else None,
            "format": data.meta.get("format"),
            "sha256": data.meta.get("sha256"),
            "has_timestamps": data.timestamps is not None,
        },
        "metrics": metrics,
        "protocol": protocol(eval_mask),
        "versions": {"virtualmle": __version__, "torch": torch.__version__, "python": platform.python_version()},
        **(extra or {}),
    }
    ids = {"items": _ids(data.item_ids, data.num_items), "users": _ids(data.user_ids, data.num_users)}
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=parent))
    try:
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        torch.save(state, tmp / WEIGHTS_FILE)
        (tmp / IDS_FILE).write_text(json.dumps(ids), encoding="utf-8")
        if priors is not None:
            np.savez(tmp / PRIORS_FILE, **priors)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a model directory is shareable
        replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_dir(src: Path, dst: Path) -> None:
    """Move directory `src` to `dst`, replacing what is there; `dst` is never half-written."""
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def read_meta(directory: Path) -> dict[str, Any]:
    """model.json of a saved model, checked to be one this version reads.

    Raises:
        ConfigError: not a model directory, or a format version this package does not read.
    """
    path = Path(directory) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{directory}: not a saved model (no {META_FILE}); save one with "
                          "`virtualmle train --save DIR` or take runs/<study>/best_model") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable model description ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a {FORMAT} description")
    if meta.get("version") != ARTIFACT_VERSION:
        raise ConfigError(f"{path}: model format version {meta.get('version')!r}; this virtualmle reads "
                          f"version {ARTIFACT_VERSION}")
    return meta


def load_weights(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, list[str]]]:
    """(model.json, state_dict, ids) of a saved model; tensors only (``weights_only=True``)."""
    directory = Path(directory)
    meta = read_meta(directory)
    try:
        state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        ids = json.loads((directory / IDS_FILE).read_text(encoding="utf-8"))
    except Exception as exc:  # a truncated or foreign file: torch and json raise many types
        raise ConfigError(f"{directory}: cannot read the saved model ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if len(ids.get("items", ())) != meta["num_items"]:
        raise ConfigError(f"{directory}: {IDS_FILE} holds {len(ids.get('items', ()))} item ids, "
                          f"model.json says {meta['num_items']}")
    return meta, state, ids


def load_priors(directory: Path) -> dict[str, np.ndarray] | None:
    """The arrays of priors.npz, None when the model has none."""
    path = Path(directory) / PRIORS_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except Exception as exc:  # truncated or foreign: numpy and zipfile raise many types
        raise ConfigError(f"{path}: cannot read the saved priors ({type(exc).__name__})") from None
