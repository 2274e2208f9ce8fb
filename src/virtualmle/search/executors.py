"""Choosing an executor from the command line: ``--executor local|ray`` and its options.

Every command that runs trials (``search``, ``tune``, ``bench``) calls `add_executor_arguments` on
its parser, `make_executor(args)` before opening the storage (a refused SQLite file is then never
created), passes the executor to `virtualmle.search.loop.run_search` (one executor may serve
several searches) and `close_executor` at the end.
"""

from __future__ import annotations

import argparse
from typing import Any

from virtualmle.errors import ConfigError
from virtualmle.search.executor import LocalExecutor, TrialExecutor

EXECUTORS = ("local", "ray")


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--executor``, ``--ray-address``, ``--cpus-per-trial`` and ``--gpus-per-trial``.

    The parser must also have ``--workers`` and ``--device`` (both commands that run trials do).
    """
    group = parser.add_argument_group("execution (see docs/ray.md)")
    group.add_argument("--executor", default="local", choices=EXECUTORS,
                       help="local: subprocesses on this machine (default); ray: one Ray task per trial on "
                            "a Ray cluster (pip install 'virtualmle[ray]')")
    group.add_argument("--ray-address", default=None, metavar="ADDR",
                       help="with --executor ray: the cluster (host:6379, ray://host:10001, auto); default "
                            "$RAY_ADDRESS, else a Ray instance started on this machine")
    group.add_argument("--cpus-per-trial", type=float, default=None, metavar="N",
                       help="with --executor ray: Ray num_cpus (and torch threads) per trial "
                            "(default cluster CPUs // --workers)")
    group.add_argument("--gpus-per-trial", type=float, default=None, metavar="F",
                       help="with --executor ray: Ray num_gpus per trial, fractions share a GPU "
                            "(default 1 when trials use a GPU)")


def check_local_options(args: Any) -> None:
    """Refuse Ray-only options when ``args`` asks for the local executor.

    Raises:
        ConfigError: ``--ray-address``, ``--cpus-per-trial`` or ``--gpus-per-trial`` without
            ``--executor ray``.
    """
    used = [f"--{n.replace('_', '-')}" for n in ("ray_address", "cpus_per_trial", "gpus_per_trial")
            if getattr(args, n, None) is not None]
    if used:
        raise ConfigError(f"{used[0]} needs --executor ray")


def make_executor(args: Any, *, storage: str | None = None) -> TrialExecutor:
    """Build the executor ``args`` asks for (an argparse namespace or any object with those names).

    Reads ``executor``, ``ray_address``, ``cpus_per_trial``, ``gpus_per_trial``, ``workers``,
    ``device`` and, unless ``storage`` is given, ``storage`` (the URL, to refuse SQLite on a
    multi-node Ray cluster).

    Raises:
        ConfigError: unknown executor, Ray missing or unreachable, Ray options without
            ``--executor ray``.
        StorageError: a SQLite storage with a multi-node Ray cluster.
    """
    kind = getattr(args, "executor", None) or "local"
    workers = int(getattr(args, "workers", 1) or 1)
    device = getattr(args, "device", None) or "auto"
    ray_opts = {name: getattr(args, name, None) for name in ("ray_address", "cpus_per_trial", "gpus_per_trial")}
    if kind == "local":
        check_local_options(args)
        return LocalExecutor(workers, device=device)
    if kind != "ray":
        raise ConfigError(f"unknown executor {kind!r}: use one of {', '.join(EXECUTORS)}")
    from virtualmle.search.ray_executor import RayExecutor

    for name in ("cpus_per_trial", "gpus_per_trial"):
        value = ray_opts[name]
        if value is not None and (value < 0 or (name == "cpus_per_trial" and value == 0)):
            raise ConfigError(f"--{name.replace('_', '-')} must be > 0 (got {value:g})")
    executor = RayExecutor(workers, address=ray_opts["ray_address"], device=device,
                           cpus_per_trial=ray_opts["cpus_per_trial"], gpus_per_trial=ray_opts["gpus_per_trial"])
    try:
        executor.check_storage(storage if storage is not None else getattr(args, "storage", None))
    except Exception:
        executor.close()
        raise
    return executor


def close_executor(executor: TrialExecutor) -> None:
    """End an executor from `make_executor` once every search using it is done.

    `run_search` only calls ``shutdown()`` (a Ray executor stays connected, so one executor can
    serve several searches); this also disconnects from Ray.
    """
    close = getattr(executor, "close", None)
    if close is not None:
        close()
    else:
        executor.shutdown()
