"""Opening a search's study: the data checked first, then the storage, the study and its run dir.

`open_study` is everything `run_search` does before the first trial: it reads the dataset (a bad
file fails here, before any storage exists), opens or creates the Optuna study, refuses a study
made for another dataset, backbone, method or metric, stores the dataset's profile once, and makes
sure the run directory is writable.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from virtualmle.errors import ConfigError, StorageError
from virtualmle.search.budget import make_pruner
from virtualmle.search.options import SearchOptions
from virtualmle.search.space import SearchSpace
from virtualmle.search.storage import default_study_name, open_storage

__all__ = ["OpenedStudy", "check_writable_dir", "default_run_dir", "open_study"]

# Identity of the study: a resumed search must agree with what the study was created for.
_IDENTITY = ("dataset", "model", "method", "metric")


@dataclass
class OpenedStudy:
    """A study ready for its first (or next) trial."""

    study: optuna.Study
    name: str
    dataset: str
    profile: dict[str, Any]
    run_dir: Path


def default_run_dir(study_name: str) -> Path:
    """``runs/<slug>``: the study name made a safe single file-name component.

    A study name is free text (``../../x`` or ``/abs/path`` are valid Optuna names), so it never
    becomes a path as is; a name with no letter or digit is refused.
    """
    slug = re.sub(r"[^A-Za-z0-9_.\-]+", "_", study_name).strip("._-")[:100]
    if not slug:
        raise ConfigError(f"--study {study_name!r} gives no usable directory name: use letters or digits")
    return Path("runs") / slug


def check_writable_dir(path: Path, option: str) -> None:
    """Create ``path`` and prove it writable now, before any trial: one line if not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{option} {path}: not writable ({exc.strerror or exc})") from None


def open_study(options: SearchOptions, method_name: str, space: SearchSpace,
               storage: optuna.storages.BaseStorage | str | None) -> OpenedStudy:
    """Load the data, then open (or create) the study for ``options`` and check its identity.

    Raises:
        DataError: the dataset cannot be read (nothing is created then).
        StorageError: the storage cannot be opened, or the study was created for another
            dataset, backbone, method or metric.
        ConfigError: the run directory is not writable, or an invalid option.
    """
    from virtualmle.data import load_dataset, profile_dataset

    # The data first: a malformed file must not leave a new, empty storage behind.
    data_dir = Path(options.data_dir) if options.data_dir else None
    data = load_dataset(options.data, data_dir=data_dir, slice_users=options.slice_users, **options.data_options)
    if isinstance(storage, str) or storage is None:
        storage = open_storage(storage)
    dataset = data.name
    name = options.study_name or default_study_name(dataset, options.model, method_name, options.seed)
    run_dir = (Path(options.run_dir) if options.run_dir else default_run_dir(name)).resolve()
    check_writable_dir(run_dir, "--run-dir")
    pruner = make_pruner(options.prune, options.max_epochs)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                    pruner=pruner, load_if_exists=True)
    except Exception as exc:
        raise StorageError(f"cannot open study {name!r}: {type(exc).__name__}: {exc}") from None
    identity = {"dataset": dataset, "model": options.model, "method": method_name, "metric": options.metric}
    stored = study.user_attrs
    for key in _IDENTITY:
        if key in stored and stored[key] != identity[key]:
            raise StorageError(
                f"study {name!r} was created for {key}={stored[key]!r}, not {identity[key]!r}: "
                "use another --study name"
            )
    if not stored:
        profile = profile_dataset(data)
        for key, value in {**identity, "seed": options.seed, "space": space.source,
                           "max_epochs": options.max_epochs, "slice_users": options.slice_users,
                           "profile": profile}.items():
            study.set_user_attr(key, value)
    else:
        profile = stored.get("profile") or profile_dataset(data)
    study.set_user_attr("budget", options.trials)
    study.set_user_attr("time_budget", options.time_budget)
    # The data goes out of scope here: the workers load their own copy; the parent only needed
    # the profile.
    return OpenedStudy(study=study, name=name, dataset=dataset, profile=profile, run_dir=run_dir)
