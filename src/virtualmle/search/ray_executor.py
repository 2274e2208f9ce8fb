"""Trials as Ray tasks: the same trial subprocess, scheduled on a Ray cluster.

`RayExecutor` has the interface of `virtualmle.search.executor.LocalExecutor` (``workers``,
``submit``, ``run``, ``cancel_all``, ``shutdown``), so the search loop, every method and the agent
use it unchanged. Each trial is one Ray task that declares its resources (``num_cpus`` = torch
threads of the trial, ``num_gpus`` when it trains on a GPU); Ray places it on a node with room.

Inside the task, the trial runs exactly as it does locally: a one-slot `LocalExecutor` starts
``python -m virtualmle.search.worker`` in its own process group. Why a subprocess inside the task
rather than calling `train` in the Ray worker: a CUDA error, a segfault or a host OOM in the trial
then kills only that subprocess and is classified (failed / oom / timeout) by the same code as on
one machine, the Ray worker survives to report it, and the timeout kills the whole process group.
The cost is one interpreter start per trial (about 1.5 s), which a Ray worker would not save
anyway: torch state from one trial must not leak into the next.

The task is a streaming generator: it yields ``started`` (pid, node), each epoch's log as it
happens (the driver records it as an Optuna intermediate value and, with ``--prune``, decides
whether to stop; the answer goes back through a small actor on the driver's node) and the final
`TrialOutcome`. Only the driver touches the Optuna storage and the memory bank.

Faults:
- the trial's own process crashes, OOMs or times out: classified as locally, counted;
- the Ray worker process running the task dies, or its node is lost: the trial ends
  ``interrupted`` with ``requeue=True``; the loop records it (FAIL, ``outcome=interrupted``, the
  error names the pid and node) and runs the same configuration again as a new trial with
  ``rerun_of``, which Ray schedules on any live node. A configuration lost ``max_requeues`` times
  in a row ends ``failed`` and counts, so a trial that takes its node down cannot loop forever.
  Ray's own task retries are off (``max_retries=0``): a silent retry would hide the lost attempt
  from the study;
- Ray's memory monitor killing the task (node memory exhausted): ``oom``, counted;
- the driver killed: Ray ends the driver's tasks (their trial subprocesses die with the Ray
  worker, ``PR_SET_PDEATHSIG``); the same command resumes the study from the storage.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict
from pathlib import Path
from typing import Any

from virtualmle.errors import ConfigError, StorageError
from virtualmle.search.executor import EpochCallback, TrialOutcome, TrialSpec
from virtualmle.search.method import Outcome
from virtualmle.search.ray_remote import Decisions, outcome_from_dict, trial_task

logger = logging.getLogger(__name__)

# Losses of one configuration to dead workers / nodes before it is recorded as failed.
DEFAULT_MAX_REQUEUES = 2
# Environment forwarded from the driver to every trial (data dir, test hooks, ...).
_FORWARD_PREFIX = "VIRTUALMLE_"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'virtualmle[ray]'") from None
    return ray


class RayExecutor:
    """Runs trials as Ray tasks, ``workers`` at a time, on the cluster at ``address``.

    Args:
        workers: trials at once (the search loop never has more running).
        address: Ray address (``host:6379``, ``ray://host:10001``, ``auto``); None: ``$RAY_ADDRESS``
            if set, else start a local Ray instance on this machine. If Ray is already initialised
            in this process, that connection is used.
        device: ``auto`` (a GPU per trial when the cluster has GPUs), ``cpu`` or ``cuda``.
        cpus_per_trial: Ray ``num_cpus`` of each trial, also its torch threads; default
            ``cluster CPUs // workers``, at least 1 and at most the largest node's CPUs.
        gpus_per_trial: Ray ``num_gpus`` of each trial (fractions share a GPU); default 1 with
            a GPU device, else 0.
        max_requeues: times a configuration lost with its worker or node is run again.
        temp_dir: Ray's session and log directory when a local instance is started (default a
            fresh directory under the system temp dir, removed on `shutdown`).
        env: extra environment for the trials; ``VIRTUALMLE_*`` variables of this process are
            forwarded too (the data directory must then be the same path on every node).

    Raises:
        ConfigError: Ray is not installed, the cluster cannot be reached, or it has no GPU
            while ``device="cuda"``.
    """

    def __init__(
        self,
        workers: int = 1,
        *,
        address: str | None = None,
        device: str = "auto",
        cpus_per_trial: float | None = None,
        gpus_per_trial: float | None = None,
        max_requeues: int = DEFAULT_MAX_REQUEUES,
        temp_dir: str | Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1 (got {workers})")
        ray = self._ray = _import_ray()
        self.workers = workers
        self.device = device
        self.max_requeues = max_requeues
        self._owns_ray = False
        self._temp_dir: Path | None = None
        if not ray.is_initialized():
            self._init(address, temp_dir)
        self.address = address or os.environ.get("RAY_ADDRESS") or "local"
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        self.nodes = len(nodes)
        total = ray.cluster_resources()
        total_cpus = float(total.get("CPU", 0))
        largest = max((float(n["Resources"].get("CPU", 0)) for n in nodes), default=total_cpus)
        total_gpus = float(total.get("GPU", 0))
        if cpus_per_trial is None:
            cpus_per_trial = max(1, min(int(total_cpus // workers), int(largest)))
        if gpus_per_trial is None:
            gpus_per_trial = 1.0 if device == "cuda" or (device == "auto" and total_gpus >= 1) else 0.0
        if device == "cpu":
            gpus_per_trial = 0.0
        if gpus_per_trial > 0 and total_gpus == 0:
            self.close()
            raise ConfigError(f"--device cuda: the Ray cluster at {self.address} has no GPU")
        self.cpus_per_trial = float(cpus_per_trial)
        self.gpus_per_trial = float(gpus_per_trial)
        self.threads = max(1, int(self.cpus_per_trial))
        self.env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARD_PREFIX)}
        self.env.update(env or {})
        self._task = ray.remote(trial_task).options(
            num_cpus=self.cpus_per_trial, num_gpus=self.gpus_per_trial, max_retries=0,
            num_returns="streaming",
        )
        self._decisions = None
        self._lock = threading.Lock()
        self._running: dict[int, Any] = {}  # trial number -> its Ray generator
        self._threads: list[threading.Thread] = []
        self._losses: dict[str, int] = {}
        self._cancelled = threading.Event()
        logger.info("Ray executor: %d node(s), %g CPUs, %g GPUs; %g CPU(s) and %g GPU(s) per trial",
                    self.nodes, total_cpus, total_gpus, self.cpus_per_trial, self.gpus_per_trial)

    def _init(self, address: str | None, temp_dir: str | Path | None) -> None:
        ray = self._ray
        local = (address in (None, "local")) and not (address is None and os.environ.get("RAY_ADDRESS"))
        kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
        if local:
            if temp_dir is None:
                self._temp_dir = Path(tempfile.mkdtemp(prefix="virtualmle-ray-"))
                temp_dir = self._temp_dir
                # Registered before ray.init, so it runs after Ray's own exit hook has stopped Ray.
                atexit.register(self._cleanup_temp)
            kwargs.update(include_dashboard=False, _temp_dir=str(Path(temp_dir).resolve()))
        # ray.init replaces the SIGTERM handler with one that calls sys.exit, which would skip the
        # CLI's clean stop (trials recorded as interrupted); keep whatever handler was there.
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:  # ConnectionError, auth errors, bad addresses come in many types
            self._cleanup_temp()
            text = str(exc).strip().splitlines()
            raise ConfigError(
                f"--ray-address {address or os.environ.get('RAY_ADDRESS') or 'local'}: cannot start or "
                f"reach Ray: {type(exc).__name__}: {text[0] if text else ''}"[:400]
            ) from None
        finally:
            if sigterm is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, sigterm)
        self._owns_ray = True

    # -- public interface -------------------------------------------------------------------
    def submit(self, spec: TrialSpec, on_epoch: EpochCallback | None = None) -> Future[TrialOutcome]:
        """Start ``spec`` as a Ray task; the future resolves to its `TrialOutcome`."""
        future: Future[TrialOutcome] = Future()
        future.set_running_or_notify_cancel()
        spec = self._portable(spec)
        if self._cancelled.is_set():
            future.set_result(TrialOutcome(number=spec.number, outcome=Outcome.INTERRUPTED,
                                           error="cancelled before it started"))
            return future
        decisions = self._decision_actor() if spec.report_epochs else None
        gen = self._task.remote(asdict(spec), self.threads, self.env, decisions)
        with self._lock:
            self._running[spec.number] = gen
        thread = threading.Thread(target=self._consume, args=(spec, on_epoch, gen, future),
                                  name=f"ray-trial-{spec.number}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return future

    def run(self, spec: TrialSpec, on_epoch: EpochCallback | None = None) -> TrialOutcome:
        """Run one trial and wait for it."""
        return self.submit(spec, on_epoch).result()

    def cancel_all(self) -> None:
        """Kill every running trial (its Ray worker and the trial's process group)."""
        self._cancelled.set()
        with self._lock:
            gens = list(self._running.values())
        for gen in gens:
            try:
                self._ray.cancel(gen, force=True)
            except Exception as exc:  # already finished
                logger.debug("cancel: %s", exc)

    def shutdown(self) -> None:
        """Wait for the result threads. The executor stays usable: `run_search` calls this at
        the end of every search, and one executor may serve several (``bench``); `close` ends it."""
        for thread in list(getattr(self, "_threads", [])):
            thread.join(timeout=60)

    def close(self) -> None:
        """`shutdown`, then disconnect from Ray (stopping the local instance if started here)."""
        self.shutdown()
        if self._owns_ray:
            try:
                self._ray.shutdown()
            finally:
                self._owns_ray = False
        self._cleanup_temp()

    def check_storage(self, url: str | None) -> None:
        """Refuse a SQLite storage on a multi-node cluster (see docs/ray.md for why).

        Raises:
            StorageError: ``url`` is a ``sqlite:`` URL (or None, the SQLite default) and the
                cluster has more than one node.
        """
        from virtualmle.search.storage import DEFAULT_STORAGE

        url = url or DEFAULT_STORAGE
        if self.nodes > 1 and url.startswith("sqlite:"):
            raise StorageError(
                f"--storage {url}: SQLite is a file on one machine and this Ray cluster has {self.nodes} "
                "nodes; use a PostgreSQL URL (postgresql://user:pass@host/db) or an Optuna journal file "
                "on a shared filesystem (journal:///shared/path/studies.log)"
            )

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------
    def _portable(self, spec: TrialSpec) -> TrialSpec:
        # Ray workers run in their own working directory: make local paths absolute.
        changes: dict[str, Any] = {"trial_dir": str(Path(spec.trial_dir).resolve())}
        if Path(spec.data).exists():
            changes["data"] = str(Path(spec.data).resolve())
        if spec.data_dir:
            changes["data_dir"] = str(Path(spec.data_dir).resolve())
        return TrialSpec(**{**asdict(spec), **changes})

    def _decision_actor(self):
        with self._lock:
            if self._decisions is None:
                ray = self._ray
                from ray.util.scheduling_strategies import (
                    NodeAffinitySchedulingStrategy,
                )

                here = ray.get_runtime_context().get_node_id()
                strategy = NodeAffinitySchedulingStrategy(node_id=here, soft=True)
                self._decisions = ray.remote(Decisions).options(
                    num_cpus=0, scheduling_strategy=strategy, max_concurrency=1000).remote()
            return self._decisions

    def _consume(self, spec: TrialSpec, on_epoch: EpochCallback | None, gen: Any,
                 future: Future[TrialOutcome]) -> None:
        ray = self._ray
        start = time.monotonic()
        where: dict[str, Any] = {}
        epochs: list[dict[str, Any]] = []
        out: TrialOutcome | None = None
        try:
            for ref in gen:
                event = ray.get(ref)
                kind = event.get("event")
                if kind == "started":
                    where = {k: v for k, v in event.items() if k != "event"}
                    logger.debug("trial %d started on %s (pid %s)", spec.number, where.get("host"), where.get("pid"))
                elif kind == "epoch":
                    log = event.get("log", {})
                    epochs.append(log)
                    stop: bool | str = False
                    if on_epoch is not None:
                        try:
                            stop = on_epoch(log)  # True, False or `worker.DISCARD`, passed on as is
                        except Exception:  # a storage hiccup while reporting must not kill the trial
                            logger.exception("trial %d: on_epoch callback failed", spec.number)
                    if spec.report_epochs and self._decisions is not None:
                        self._decisions.put.remote(spec.number, log.get("epoch"), stop)
                elif kind == "outcome":
                    out = outcome_from_dict(event["outcome"])
            if out is None:
                raise RuntimeError("the Ray task ended without reporting an outcome")
        except Exception as exc:  # noqa: BLE001 - every Ray failure is classified below
            out = self._classify(spec, exc, where)
            out.epochs = epochs
        finally:
            with self._lock:
                self._running.pop(spec.number, None)
        out.seconds = out.seconds or (time.monotonic() - start)
        out.timings.update({f"ray_{k}": v for k, v in where.items()})
        if not out.log_path:
            out.log_path = str(Path(spec.trial_dir) / "worker.log")
        future.set_result(out)

    def _classify(self, spec: TrialSpec, exc: BaseException, where: dict[str, Any]) -> TrialOutcome:
        ray = self._ray
        out = TrialOutcome(number=spec.number, outcome=Outcome.FAILED)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        place = f"pid {where.get('pid', '?')} on {where.get('host', '?')} (node {str(where.get('node', '?'))[:12]})"
        if self._cancelled.is_set():
            out.outcome, out.error = Outcome.INTERRUPTED, "cancelled (Ctrl-C)"
        elif isinstance(exc, ray.exceptions.OutOfMemoryError):
            out.outcome = Outcome.OOM
            out.error = f"OutOfMemoryError: Ray's memory monitor killed the trial's worker ({place}): {first}"
        elif isinstance(exc, (ray.exceptions.RayTaskError, ray.exceptions.RuntimeEnvSetupError,
                              ray.exceptions.TaskUnschedulableError, RuntimeError)):
            # Our task code itself failed (e.g. virtualmle not installed on that node): counted.
            out.error = f"RayTaskError: {type(exc).__name__}: {first}"
        else:
            # WorkerCrashedError, NodeDiedError, LocalRayletDiedError, ObjectLostError, ...:
            # the machine failed, not the configuration.
            key = json.dumps([spec.data, spec.config], sort_keys=True, default=str)
            with self._lock:
                self._losses[key] = self._losses.get(key, 0) + 1
                losses = self._losses[key]
            what = f"WorkerLost: the Ray worker running the trial died ({place}): {type(exc).__name__}: {first}"
            if losses <= self.max_requeues:
                out.outcome, out.requeue = Outcome.INTERRUPTED, True
                out.error = f"{what}; re-queued ({losses} of {self.max_requeues})"
            else:
                out.error = f"{what}; this configuration was lost {losses} times, not re-queued again"
        logger.warning("trial %d: %s", spec.number, out.error)
        return out

    def _cleanup_temp(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
