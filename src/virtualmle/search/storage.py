"""Optuna storage: open a URL, name studies, and recover trials a killed process left RUNNING.

URLs:
- ``sqlite:///path/studies.db`` (the default is ``sqlite:///virtualmle.db``): a SQLite file. It is
  switched to write-ahead logging and every connection waits up to 60 s for a lock, so several
  workers and several processes can write to one file without "database is locked".
- ``postgresql://user:pass@host/db``, ``mysql+pymysql://...``: any SQLAlchemy URL Optuna accepts.
- ``journal:///path/file.log``: Optuna's `JournalStorage` on a file (safe for many processes,
  including on NFS, no database needed).

Every storage opened here is a plain Optuna storage: ``optuna-dashboard URL`` (for SQLite and
RDB URLs) shows the studies as they are.

Nothing is created before the inputs are known good: commands call `check_storage` first (the
URL's form and directory, creating nothing) and open the storage once the data has loaded;
`open_storage(url, create=False)` (the report) refuses a file that does not exist. No lock file
is left beside a SQLite file: processes creating a new file's schema take turns on an advisory
lock of its directory.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from virtualmle.errors import StorageError

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///virtualmle.db"
# Seconds a SQLite connection waits for another writer before giving up.
SQLITE_TIMEOUT_S = 60


def check_storage(url: str | None = None) -> str:
    """Check a storage URL's form and, for files, that their directory exists; creates nothing.

    Returns:
        The URL (the default when None).
    Raises:
        StorageError: as `open_storage` would for these problems.
    """
    url = url or DEFAULT_STORAGE
    if url.startswith("journal://"):
        _journal_path(url)
    elif url.startswith("sqlite:"):
        path = sqlite_path(url)
        if path is not None and not path.parent.exists():
            raise StorageError(f"cannot open storage {url!r}: directory {path.parent} does not exist")
    elif "://" not in url:
        _no_scheme(url)
    return url


def _no_scheme(url: str) -> None:
    raise StorageError(
        f"storage URL {url!r} has no scheme: use sqlite:///FILE, journal:///FILE or a "
        "database URL such as postgresql://..."
    )


def open_storage(url: str | None = None, *, create: bool = True) -> optuna.storages.BaseStorage:
    """Open an Optuna storage from a URL (see the module docstring).

    Args:
        url: the storage URL (default ``sqlite:///virtualmle.db``).
        create: with False, a SQLite or journal file that does not exist is an error instead of
            being created (for readers such as the report).
    Raises:
        StorageError: the URL's scheme is unknown or the storage cannot be opened; the message
            is one line naming the URL.
    """
    url = check_storage(url)
    if not create:
        path = sqlite_path(url) if url.startswith("sqlite:") else None
        if url.startswith("journal://"):
            path = _journal_path(url)
        if path is not None and not path.is_file():
            raise StorageError(f"storage {url!r}: no such file {path} (nothing has been stored there)")
    try:
        if url.startswith("journal://"):
            return _open_journal(url)
        if url.startswith("sqlite:"):
            return _open_sqlite(url)
        if "://" not in url:
            _no_scheme(url)
        return _open_rdb(url, {})
    except StorageError:
        raise
    except Exception as exc:  # SQLAlchemy / driver errors come in many types
        raise StorageError(f"cannot open storage {url!r}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _open_journal(url: str) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(_journal_path(url))))


def _journal_path(url: str) -> Path:
    """The file of a ``journal:///`` URL, its directory checked to exist."""
    raw = url[len("journal://"):]
    if raw.startswith("/"):
        raw = "/" + raw.lstrip("/")  # journal:///abs and journal:////abs both mean /abs
    path = Path(raw)
    if not raw or str(path) == ".":
        raise StorageError(f"storage URL {url!r}: expected journal:///path/to/file.log")
    if not path.parent.is_dir():
        raise StorageError(f"cannot open storage {url!r}: directory {path.parent} does not exist")
    return path


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL (None for in-memory)."""
    rest = url.split(":", 1)[1]
    if not rest.startswith("///"):
        return None
    path = rest[3:].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _open_sqlite(url: str) -> optuna.storages.BaseStorage:
    path = sqlite_path(url)
    if path is not None:
        if not path.parent.exists():
            raise StorageError(f"cannot open storage {url!r}: directory {path.parent} does not exist")
        try:
            # WAL lets readers (the dashboard, other workers) proceed while one process writes;
            # the mode is persistent in the file, so set it once before Optuna connects.
            con = sqlite3.connect(str(path), timeout=SQLITE_TIMEOUT_S)
            try:
                con.execute("PRAGMA journal_mode=WAL")
            finally:
                con.close()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open storage {url!r}: {exc}") from None
    kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    if path is None:
        return _open_rdb(url, kwargs)
    # Several processes creating the schema of a new file at once collide (Optuna writes the
    # alembic version row); an advisory lock on the directory makes them take turns without
    # leaving a lock file behind (a lock file cannot be removed safely while others may wait on it).
    import fcntl

    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _open_rdb(url, kwargs)
    finally:
        os.close(fd)  # closing releases the lock


def _open_rdb(url: str, engine_kwargs: dict[str, Any]) -> optuna.storages.BaseStorage:
    last: Exception | None = None
    # Several processes creating the schema of a new file at once can collide; the loser retries.
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs or None)
        except Exception as exc:
            last = exc
            text = str(exc)
            if not any(s in text for s in ("already exists", "locked", "UNIQUE constraint")):
                break
            time.sleep(0.2 * (attempt + 1))
    assert last is not None
    raise StorageError(f"cannot open storage {url!r}: {_first_line(last)}")


def default_study_name(dataset: str, model: str, method: str, seed: int) -> str:
    """``<dataset>-<model>-<method>-s<seed>``: one study per dataset x backbone x method x seed."""
    return f"{dataset}-{model}-{method}-s{seed}"


def _proc_start(pid: int) -> str | None:
    # Process start time in clock ticks since boot: with the pid it identifies a process even if
    # the pid is later reused.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_info() -> dict[str, Any]:
    """Identity of this search process, stored on each trial it runs (user attr ``owner``)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _proc_start(pid)}


def owner_alive(owner: dict[str, Any] | None) -> bool:
    """Whether the process that started a trial still runs.

    Only decidable on the same host; a trial owned by another host counts as alive (another
    machine may legitimately be working on the same study).
    """
    if not owner:
        return False
    if owner.get("host") != socket.gethostname():
        return True
    pid = int(owner.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = owner.get("start")
    return start is None or _proc_start(pid) == start


ASK_GRACE_S = 300.0  # a RUNNING trial without an owner younger than this was just asked


def _just_asked(trial: optuna.trial.FrozenTrial) -> bool:
    import datetime as _dt

    started = trial.datetime_start
    return started is not None and (_dt.datetime.now() - started).total_seconds() < ASK_GRACE_S


def recover_interrupted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Mark trials left RUNNING by a dead search process as FAIL with ``outcome=interrupted``.

    Returns the recovered trials (their params and user attrs, so the loop can run them again).
    """
    storage = study._storage
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("owner")
        if owner_alive(owner):
            continue
        if owner is None and _just_asked(trial):
            # Another process asked it a moment ago and has not written its owner yet (a
            # sampler's draw gets its attributes right after `ask`): it is not orphaned.
            continue
        if trial.user_attrs.get("outcome") not in (None, "interrupted"):
            continue  # trained to the end: the search loop observes it from storage (redo_observe)
        try:
            storage.set_trial_user_attr(trial._trial_id, "outcome", "interrupted")
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except Exception as exc:  # it finished meanwhile, or another process recovered it
            logger.debug("trial %d: not recovered (%s)", trial.number, exc)
            continue
        logger.info("trial %d was left RUNNING by a dead process: marked interrupted", trial.number)
        recovered.append(trial)
    return recovered
