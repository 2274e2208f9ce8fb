"""The trial executor: one trial per subprocess, with a timeout, cancellation and classification.

`LocalExecutor` runs up to ``workers`` trials at once on this machine. Each trial is a fresh
``python -m virtualmle.search.worker SPEC.json`` process in its own process group, so a crash, an
out-of-memory or a CUDA error cannot take the search down, and a timeout or Ctrl-C kills the whole
group. CPU threads are divided among the workers (``cores // workers`` each, via
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` and ``torch.set_num_threads``) and GPUs are handed out
round-robin through ``CUDA_VISIBLE_DEVICES``.

The worker talks back in JSON lines on its stdout (see `virtualmle.search.worker`); its stderr
goes to ``<trial_dir>/worker.log``. Anything that can replace this class (a Ray executor, say)
only needs `submit` and `cancel_all`.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from virtualmle.files import write_atomic
from virtualmle.search.method import Outcome
from virtualmle.search.worker import DISCARD

logger = logging.getLogger(__name__)

# Seconds between SIGTERM and SIGKILL when a trial's process group is stopped.
_KILL_GRACE_S = 2.0
# Lines of traceback kept for a failed trial (the full one is in worker.log).
TRACEBACK_LINES = 12

# True stops the trial; `worker.DISCARD` stops it and says its model is not kept (no test run).
EpochCallback = Callable[[dict[str, Any]], "bool | str"]
# Environment variables never passed to a worker process: keys, tokens, passwords.
_SECRET_NAME = re.compile(r"(?i)(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$|^OPENAI_|^ANTHROPIC_")


@dataclass
class TrialSpec:
    """Everything a worker process needs to run one trial (JSON-serialisable).

    Attributes:
        number: Optuna trial number (also selects test faults, see the worker).
        data: dataset spec for `virtualmle.data.load_dataset` (name or path).
        config: full flat `TrainConfig` parameters (model, fidelity controls, seed included).
        trial_dir: directory for ``spec.json`` and ``worker.log``.
        slice_users: keep the first N users (fidelity control), or None.
        data_dir: dataset directory override, or None for ``$VIRTUALMLE_DATA_DIR``.
        device: ``cpu``, ``cuda`` or ``auto`` (cuda when the worker sees a GPU).
        timeout: wall-clock seconds before the trial is killed, or None.
        report_epochs: ask the parent after every epoch whether to stop (pruning).
        dry_run: load data and build the model, train nothing (overhead benchmark).
        data_options: how to read the file: `load_dataset`'s ``fmt`` and ``columns``.
        save_model: save the trained model into ``<trial_dir>/model`` (see `search.model_keeper`).
        checkpoint: file the run's resumable state is written to after every validation, or None.
        resume_from: a checkpoint to continue from (copied to ``checkpoint`` first, so the
            screened trial's own stays as it was), or None.
        partial: a screen: the first epochs of a longer run, compared, not kept, so a run that
            reaches its ``max_epochs`` (or a method stops) scores no test split and saves no model;
            one the compute budget cut is tested and kept like any run cut at the deadline.
    """

    number: int
    data: str
    config: dict[str, Any]
    trial_dir: str
    slice_users: int | None = None
    data_dir: str | None = None
    device: str = "auto"
    timeout: float | None = None
    report_epochs: bool = False
    dry_run: bool = False
    data_options: dict[str, Any] = field(default_factory=dict)
    save_model: bool = False
    checkpoint: str | None = None
    resume_from: str | None = None
    partial: bool = False


@dataclass
class TrialOutcome:
    """What became of one trial.

    Attributes:
        number: trial number.
        outcome: `Outcome` class.
        result: the worker's `TrainResult.to_json()` for complete / pruned trials.
        epochs: per-epoch logs received while it ran.
        error: ``"Type: message"`` when it did not complete.
        traceback: the last lines of the worker's traceback (failed trials).
        seconds: wall-clock seconds including process start.
        returncode: the worker's exit status (negative: killed by that signal).
        log_path: the worker's stderr log.
        timings: worker-side timings (``import``, ``load``, ``build`` seconds) and the resources
            it was given (``threads``, ``gpu``, ``device``).
        requeue: with outcome ``interrupted``: the trial was lost to an infrastructure fault (a
            Ray worker or node died), not to Ctrl-C; the loop runs its configuration again at
            once. `LocalExecutor` never sets it.
    """

    number: int
    outcome: Outcome
    result: dict[str, Any] | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0
    returncode: int | None = None
    log_path: str | None = None
    timings: dict[str, Any] = field(default_factory=dict)
    requeue: bool = False


class TrialExecutor(Protocol):
    """What the search loop needs from an executor."""

    workers: int

    def submit(self, spec: TrialSpec, on_epoch: EpochCallback | None = None) -> Future[TrialOutcome]:
        """Start a trial; ``on_epoch(log)`` returning True asks the trial to stop (pruning)."""
        ...

    def cancel_all(self) -> None:
        """Kill every running trial; their futures resolve as ``interrupted``."""
        ...

    def shutdown(self) -> None:
        """Release resources once nothing is running."""
        ...


@dataclass(frozen=True)
class _Slot:
    index: int
    threads: int
    gpu: str | None


def detect_gpus(device: str = "auto") -> list[str]:
    """GPU ids to hand out: from ``CUDA_VISIBLE_DEVICES`` if set, else what torch sees."""
    if device == "cpu":
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None and device != "cuda":
        return []  # no driver: skip importing torch just to learn there is no GPU
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken CUDA install must not stop a CPU search
        return []


class LocalExecutor:
    """Runs trials in subprocesses on this machine, ``workers`` at a time.

    Args:
        workers: trials at once.
        device: ``auto``, ``cpu`` or ``cuda``; decides whether GPUs are assigned.
        threads: CPU threads per trial; default ``max(1, cores // workers)``.
        gpus: GPU ids to assign round-robin; default `detect_gpus`.
        python: interpreter for the workers (default: this one).
        env: extra environment for the workers.
    """

    def __init__(
        self,
        workers: int = 1,
        *,
        device: str = "auto",
        threads: int | None = None,
        gpus: list[str] | None = None,
        python: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self.device = device
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.threads = threads or max(1, cores // workers)
        self.gpus = detect_gpus(device) if gpus is None else list(gpus)
        self.python = python or sys.executable
        self.env = dict(env or {})
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="trial")
        self._slots: queue.Queue[_Slot] = queue.Queue()
        for i in range(workers):
            gpu = self.gpus[i % len(self.gpus)] if self.gpus else None
            self._slots.put(_Slot(i, self.threads, gpu))
        self._procs: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._cancelled = threading.Event()

    # -- public interface -------------------------------------------------------------------
    def submit(self, spec: TrialSpec, on_epoch: EpochCallback | None = None) -> Future[TrialOutcome]:
        """Start ``spec`` in a worker process; the future resolves to its `TrialOutcome`."""
        return self._pool.submit(self._run_in_slot, spec, on_epoch)

    def run(self, spec: TrialSpec, on_epoch: EpochCallback | None = None) -> TrialOutcome:
        """Run one trial and wait for it."""
        return self.submit(spec, on_epoch).result()

    def cancel_all(self) -> None:
        """Kill every running worker's process group (Ctrl-C); their trials end ``interrupted``."""
        self._cancelled.set()
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            _kill_group(proc)

    def shutdown(self) -> None:
        """Wait for running trials and stop the threads."""
        self._pool.shutdown(wait=True)

    # -- internals --------------------------------------------------------------------------
    def _run_in_slot(self, spec: TrialSpec, on_epoch: EpochCallback | None) -> TrialOutcome:
        slot = self._slots.get()
        try:
            return self._run(spec, on_epoch, slot)
        finally:
            self._slots.put(slot)

    def _worker_env(self, slot: _Slot) -> dict[str, str]:
        # A trial trains a model: it needs no API key or token, so none is passed on.
        env = {k: v for k, v in {**os.environ, **self.env}.items() if not _SECRET_NAME.search(k)}
        threads = str(slot.threads)
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, VIRTUALMLE_TORCH_THREADS=threads)
        # Spinning OpenMP threads make oversubscribed trials (several workers, a busy machine)
        # several times slower; passive waiting costs nothing measurable on an idle one.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if slot.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot.gpu
        elif self.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _run(self, spec: TrialSpec, on_epoch: EpochCallback | None, slot: _Slot) -> TrialOutcome:
        start = time.monotonic()
        trial_dir = Path(spec.trial_dir)
        trial_dir.mkdir(parents=True, exist_ok=True)
        spec_path = trial_dir / "spec.json"
        write_atomic(spec_path, json.dumps(asdict(spec), indent=1))
        log_path = trial_dir / "worker.log"
        out = TrialOutcome(number=spec.number, outcome=Outcome.FAILED, log_path=str(log_path))
        if self._cancelled.is_set():
            out.outcome, out.error = Outcome.INTERRUPTED, "cancelled before it started"
            return out

        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [self.python, "-m", "virtualmle.search.worker", str(spec_path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=self._worker_env(slot),
                start_new_session=True,  # own process group: killpg reaches its children too
                cwd=os.getcwd(),
            )
        with self._lock:
            self._procs[spec.number] = proc
        timed_out = threading.Event()
        timer = None
        if spec.timeout:
            def _on_timeout() -> None:
                timed_out.set()
                _kill_group(proc)

            timer = threading.Timer(spec.timeout, _on_timeout)
            timer.daemon = True
            timer.start()
        final: dict[str, Any] | None = None
        try:
            assert proc.stdout is not None and proc.stdin is not None
            for raw in proc.stdout:
                try:
                    event = json.loads(raw)
                except ValueError:
                    logger.debug("trial %d: non-JSON line from worker: %r", spec.number, raw[:200])
                    continue
                kind = event.get("event")
                if kind == "epoch":
                    log_entry = event.get("log", {})
                    out.epochs.append(log_entry)
                    stop: bool | str = False
                    if on_epoch is not None:
                        try:
                            stop = on_epoch(log_entry)
                        except Exception:  # a storage hiccup while reporting must not kill the trial
                            logger.exception("trial %d: on_epoch callback failed", spec.number)
                    if spec.report_epochs:
                        _reply(proc, {"stop": bool(stop), "discard": stop == DISCARD})
                elif kind == "timing":
                    out.timings.update({k: v for k, v in event.items() if k != "event"})
                elif kind in ("result", "error"):
                    final = event
            proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:
                self._procs.pop(spec.number, None)
            if proc.poll() is None:  # leaving early (an exception here): never leave it running
                _kill_group(proc)
                proc.wait()

        out.returncode = proc.returncode
        out.seconds = time.monotonic() - start
        if timed_out.is_set():
            out.outcome = Outcome.TIMEOUT
            out.error = f"TimeoutError: trial ran past its {spec.timeout:g} s limit and was killed"
        elif self._cancelled.is_set() and (final is None or final.get("event") != "result"):
            out.outcome, out.error = Outcome.INTERRUPTED, "cancelled (Ctrl-C)"
        elif final is not None and final["event"] == "result":
            out.result = final["result"]
            out.outcome = Outcome.PRUNED if out.result.get("stopped") == "pruned" else Outcome.COMPLETE
        elif final is not None:
            out.outcome = Outcome(final.get("outcome", "failed"))
            out.error = f"{final.get('type', 'Error')}: {final.get('message', '')}"
            out.traceback = final.get("traceback")
        elif proc.returncode == -signal.SIGKILL:
            # Nobody here sent SIGKILL: on Linux that is the kernel's OOM killer.
            out.outcome = Outcome.OOM
            out.error = "Killed: worker received SIGKILL (most likely the kernel's out-of-memory killer)"
        else:
            out.outcome = Outcome.FAILED
            how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
            out.error = f"WorkerCrashed: worker died with {how} before reporting a result"
            out.traceback = _tail(log_path)
        return out


def _reply(proc: subprocess.Popen, message: dict[str, Any]) -> None:
    try:
        assert proc.stdin is not None
        proc.stdin.write((json.dumps(message) + "\n").encode())
        proc.stdin.flush()
    except (BrokenPipeError, OSError):
        pass  # the worker is gone; its exit is classified below


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the worker's process group, then SIGKILL what is left after a grace period."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + _KILL_GRACE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(path: Path, lines: int = TRACEBACK_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
