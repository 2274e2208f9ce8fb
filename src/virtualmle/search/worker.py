"""One trial in its own process: ``python -m virtualmle.search.worker SPEC.json``.

The parent (`virtualmle.search.executor.LocalExecutor`) writes a `TrialSpec` as JSON, starts this
module and reads JSON lines from its stdout:

- ``{"event": "timing", "import": s, "load": s, "build": s, "threads", "gpu", "device"}``: where
  start-up time went and what resources the trial was given.
- ``{"event": "epoch", "log": {...}}``: after each epoch's validation. If the spec has
  ``report_epochs``, the worker then reads one line ``{"stop": bool, "discard": bool}`` from stdin
  (pruning; ``discard``: the trial is not kept, so its test split is not scored nor its model saved).
  A spec with ``partial`` (a screen) that runs its ``max_epochs`` is not kept either; early
  stopping makes it a full run, and a budget stop a run cut at the deadline (both kept).
- ``{"event": "result", "result": {...}}``: `TrainResult.to_json()`; the trial completed.
- ``{"event": "error", "outcome": "failed|oom|diverged|invalid", "type", "message", "traceback"}``.

Everything else the trial prints (including C-level output) goes to stderr, which the parent
sends to ``worker.log``, so stdout carries only events.

Testing hook: ``VIRTUALMLE_TEST_FAULT="KIND@N[,KIND@N...]"`` makes trial number N (or every trial
with ``*``) misbehave after its data is loaded, so fault handling is exercised through the real
subprocess and classification. Kinds: ``raise`` (RuntimeError), ``hang`` (sleeps forever),
``nan`` (DivergedError as the trainer raises it), ``oom`` (a real failed 1 PiB allocation in
torch), ``exit`` (dies with exit code 3, no report), ``kill`` (SIGKILL to itself, as the kernel's
OOM killer would). It is read only from the environment, never from a spec or a study.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

# In the trial directory: its presence asks the running trial to end its epoch now, validate and
# stop (the driver writes it when a study's compute budget is spent, or a method gives up on it).
# Its text DISCARD (also a reply's "discard") says the trial is not kept: a method or a pruner
# stopped it, so it is never the study's choice and scoring its test split or saving its model would
# only cost time, as would validating the epoch it was cut in (`train` skips it). A trial the budget
# stopped may still be the choice, a screen (`TrialSpec.partial`) included: it is tested and saved.
STOP_FILE = "stop"
DISCARD = "discard"

_T0 = time.monotonic()
TEST_FAULT_ENV = "VIRTUALMLE_TEST_FAULT"
TRACEBACK_LINES = 12


def _die_with_parent() -> None:
    # If the search process is killed (kill -9), take the trial down with it (Linux only).
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _fault_for(number: int) -> str | None:
    raw = os.environ.get(TEST_FAULT_ENV, "")
    for item in raw.split(","):
        kind, _, target = item.strip().partition("@")
        if kind and (target == "*" or (target.isdigit() and int(target) == number)):
            return kind
    return None


def _inject(kind: str) -> None:
    from virtualmle.errors import DivergedError

    if kind == "raise":
        raise RuntimeError("injected fault (VIRTUALMLE_TEST_FAULT=raise)")
    if kind == "hang":
        while True:
            time.sleep(3600)
    if kind == "nan":
        raise DivergedError("loss became nan at epoch 1 (injected by VIRTUALMLE_TEST_FAULT=nan)")
    if kind == "oom":
        import torch

        torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: a real allocator failure
    if kind == "exit":
        os._exit(3)
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


def classify(exc: BaseException) -> str:
    """Outcome class of an exception raised inside a trial."""
    from virtualmle.errors import ConfigError, DivergedError

    if isinstance(exc, DivergedError):
        return "diverged"
    if isinstance(exc, MemoryError):
        return "oom"
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return "oom"
    text = str(exc).lower()
    if isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text):
        return "oom"
    if isinstance(exc, ConfigError):
        return "invalid"
    return "failed"


class _Events:
    """JSON lines on the original stdout; sys.stdout is pointed at stderr."""

    def __init__(self) -> None:
        sys.stdout.flush()
        self._out: TextIO = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)  # prints from the trial (Python or C) land in worker.log
        sys.stdout = sys.stderr

    def send(self, **event: Any) -> None:
        self._out.write(json.dumps(event, default=_json_default) + "\n")
        self._out.flush()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()  # numpy / torch scalars
    if hasattr(obj, "to_json"):
        return obj.to_json()
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    return str(obj)


def _epoch_dict(log: Any) -> dict[str, Any]:
    if isinstance(log, dict):
        return log
    if hasattr(log, "to_json"):
        return log.to_json()
    import dataclasses

    return dataclasses.asdict(log)


def run(spec: dict[str, Any], events: _Events) -> None:
    """Load data, build the configuration and train; report through ``events``."""
    threads = int(os.environ.get("VIRTUALMLE_TORCH_THREADS", "0") or 0)
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    from virtualmle.data import load_dataset
    from virtualmle.training import TrainConfig, train

    t_import = time.monotonic()
    config = TrainConfig(**spec["config"])
    data_dir = Path(spec["data_dir"]) if spec.get("data_dir") else None
    data = load_dataset(spec["data"], data_dir=data_dir, slice_users=spec.get("slice_users"),
                        **(spec.get("data_options") or {}))
    t_load = time.monotonic()
    timing: dict[str, Any] = {"import": t_import - _T0, "load": t_load - t_import}
    fault = _fault_for(int(spec["number"]))
    if fault:
        _inject(fault)

    device = spec.get("device") or "auto"
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"

    # What this trial was given, so the parent (and tests) can see the division of resources.
    timing["threads"] = torch.get_num_threads()
    timing["gpu"] = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    timing["device"] = device
    if spec.get("dry_run"):
        from virtualmle.models import build_model
        from virtualmle.training.trainer import model_config

        model = build_model(config.model, model_config(config, data.num_items)).to(device)
        num_params = sum(p.numel() for p in model.parameters())
        timing["build"] = time.monotonic() - t_load
        events.send(event="timing", **timing)
        events.send(event="result", result={"dry_run": True, "num_params": num_params, "valid": {}, "test": {}})
        return
    events.send(event="timing", **timing)

    told = {"discard": False}  # the parent's last reply said the trial is not kept

    def on_epoch(log: Any) -> bool:
        events.send(event="epoch", log=_epoch_dict(log))
        if not spec.get("report_epochs"):
            return False
        reply = sys.stdin.readline()
        if not reply:  # parent gone
            os._exit(1)
        answer = json.loads(reply)
        told["discard"] = bool(answer.get("stop") and answer.get("discard"))
        return bool(answer.get("stop"))

    checkpoint = spec.get("checkpoint")
    source = spec.get("resume_from")
    if checkpoint and source and Path(source).is_file() and not Path(checkpoint).exists():
        # A promotion: continue from the screened trial's checkpoint without touching it.
        import shutil

        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, f"{checkpoint}.part")
        os.replace(f"{checkpoint}.part", checkpoint)
    stop_file = Path(spec["trial_dir"]) / STOP_FILE
    result = train(data, config, device=device, on_epoch=on_epoch, checkpoint=checkpoint, stop_file=stop_file,
                   discarded=lambda: told["discard"] or _says_discard(stop_file), partial=bool(spec.get("partial")))
    doc = result.to_json()
    if spec.get("save_model") and not result.discarded:
        # Before the result: the driver takes the model on it, or drops it when a pruner or a
        # screen stopped the trial (a trial the budget stopped may still be the study's choice).
        _save(spec, result, doc, data)
    events.send(event="result", result=doc)


def _says_discard(stop_file: Path) -> bool:
    """Whether the stop file asks for the trial to be discarded (`DISCARD`)."""
    try:
        return stop_file.read_text().strip() == DISCARD
    except OSError:
        return False


def _save(spec: dict[str, Any], result: Any, doc: dict[str, Any], data: Any) -> None:
    """This trial's model into ``<trial_dir>/model`` (`virtualmle.models.artifact` layout)."""
    from virtualmle.models.artifact import save_model
    from virtualmle.training.priors import prior_arrays

    save_model(
        Path(spec["trial_dir"]) / "model", result.model, config=doc["config"], data=data,
        eval_mask=result.eval_mask, priors=prior_arrays(data, result.config),
        data_info={"spec": spec["data"], "slice_users": spec.get("slice_users"),
                   "options": spec.get("data_options") or {}},
        metrics={k: doc[k] for k in ("valid", "test", "best_epoch", "stopped")},
        extra={"trial": int(spec["number"])},
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker process."""
    _die_with_parent()
    argv = sys.argv[1:] if argv is None else argv
    events = _Events()
    try:
        with open(argv[0]) as fh:
            spec = json.load(fh)
        run(spec, events)
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure is classified and reported
        if isinstance(exc, KeyboardInterrupt):
            raise
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        events.send(
            event="error",
            outcome=classify(exc),
            type=type(exc).__name__,
            message=str(exc).splitlines()[0][:500] if str(exc) else "",
            traceback="\n".join(tb.splitlines()[-TRACEBACK_LINES:]),
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
