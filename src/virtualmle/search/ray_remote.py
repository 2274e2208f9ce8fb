"""What runs on the Ray cluster for `RayExecutor` (`search/ray_executor.py`, the driver's side).

`trial_task` is the body of one trial's Ray task: it runs the trial in a subprocess through a
one-slot `LocalExecutor`, exactly as on one machine, and streams its events (``started``, each
epoch's log, the final outcome) back to the driver. `Decisions` is the small async actor that
carries the driver's prune decisions back to a running trial. Nothing here touches the Optuna
storage or the memory bank: only the driver does.
"""

from __future__ import annotations

import os
import queue
import socket
from dataclasses import asdict, fields
from typing import Any

from virtualmle.search.executor import TrialOutcome, TrialSpec
from virtualmle.search.method import Outcome
from virtualmle.search.worker import DISCARD

# Seconds a trial waits for the driver's prune decision before it carries on.
_DECISION_TIMEOUT_S = 600.0

__all__ = ["Decisions", "outcome_from_dict", "trial_task"]


def trial_task(spec_dict: dict[str, Any], threads: int, env: dict[str, str], decisions: Any):
    """Body of the Ray task (a generator): run one trial in a subprocess and stream its events."""
    import ray

    from virtualmle.search.executor import LocalExecutor

    spec = TrialSpec(**spec_dict)
    gpus = [str(g) for g in ray.get_gpu_ids()]
    env = dict(env)
    if not gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU was reserved for this task: use none
    ctx = ray.get_runtime_context()
    yield {"event": "started", "pid": os.getpid(), "node": ctx.get_node_id(), "host": socket.gethostname(),
           "gpus": gpus}
    local = LocalExecutor(1, device=spec.device, threads=threads, gpus=gpus, env=env)
    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def on_epoch(log: dict[str, Any]) -> bool | str:
        events.put(("epoch", log))
        if spec.report_epochs and decisions is not None:
            try:
                answer = ray.get(decisions.wait.remote(spec.number, log.get("epoch")), timeout=_DECISION_TIMEOUT_S)
                return DISCARD if answer == DISCARD else bool(answer)
            except Exception:  # driver gone or slow: keep training; the driver decides at the end
                return False
        return False

    future = local.submit(spec, on_epoch)
    future.add_done_callback(lambda _f: events.put(("done", None)))
    try:
        while True:
            kind, item = events.get()
            if kind == "done":
                break
            yield {"event": "epoch", "log": item}
        out = future.result()
    finally:
        if not future.done():  # cancelled (KeyboardInterrupt from ray.cancel): stop the trial too
            local.cancel_all()
        local.shutdown()
    payload = asdict(out)
    payload["outcome"] = out.outcome.value
    yield {"event": "outcome", "outcome": payload}


class Decisions:
    """Prune decisions from the driver to the trials (an async Ray actor on the driver's node)."""

    def __init__(self) -> None:
        import asyncio

        self._asyncio = asyncio
        self._values: dict[tuple[int, Any], bool] = {}
        self._events: dict[tuple[int, Any], Any] = {}

    def _event(self, key: tuple[int, Any]):
        if key not in self._events:
            self._events[key] = self._asyncio.Event()
        return self._events[key]

    async def put(self, number: int, epoch: Any, stop: bool | str) -> None:
        self._values[(number, epoch)] = stop
        self._event((number, epoch)).set()

    async def wait(self, number: int, epoch: Any) -> bool | str:
        key = (number, epoch)
        await self._event(key).wait()
        self._events.pop(key, None)
        return self._values.pop(key, False)


def outcome_from_dict(payload: dict[str, Any]) -> TrialOutcome:
    known = {f.name for f in fields(TrialOutcome)}
    data = {k: v for k, v in payload.items() if k in known}
    data["outcome"] = Outcome(data["outcome"])
    return TrialOutcome(**data)
