"""A bench run's bookkeeping in its study: wall time and LLM usage, kept in storage.

The LLM's call log lives in the machine-local run directory; the study (a committed journal, say)
is what travels. `record_run` stores each log's usage under the log's id, and `stored_llm_usage`
sums them, so a bench continued on another machine neither loses nor double-counts calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["llm_usage", "record_run", "stored_llm_usage"]


def llm_usage(run_dir: Path) -> dict[str, Any]:
    """Calls, tokens, seconds and cost from a run's ``llm_log.jsonl`` (zeros without one), and the
    log's id (its first call's id: another machine's log of the same run has another)."""
    from virtualmle.llm import log_summary, read_log
    from virtualmle.llm.log import LOG_NAME

    entries = read_log(run_dir / LOG_NAME)
    if not entries:
        return {"calls": 0, "tokens": 0, "seconds": 0.0, "cost_usd": 0.0, "cache_hits": 0, "logged": False}
    totals = log_summary(entries)
    return {
        "calls": totals["calls"],
        "tokens": totals["tokens"],
        "seconds": round(totals["seconds"], 3),
        "cost_usd": totals["cost_usd"],
        "cache_hits": totals["cache_hits"],
        "logged": True,
        "log_id": entries[0].get("call_id"),
    }


def record_run(study: Any, run_dir: Path, wall: float) -> None:
    """After a bench run (or its resume): its wall time, and its LLM usage, into the study.

    The LLM log lives in the machine-local run directory, so a bench continued on another machine
    starts a new log there. Each log's usage is kept in storage under its first call's id
    (``bench_llm_logs``), and `read_run` sums them: nothing is lost or counted twice.
    """
    # Wall time of the method (LLM calls, surrogate fitting) plus trials, summed over resumes.
    study.set_user_attr("bench_wall_seconds", float(study.user_attrs.get("bench_wall_seconds", 0.0)) + wall)
    logs, here = _usage_by_log(study, run_dir)
    if here["logged"]:
        study.set_user_attr("bench_llm_logs", logs)


def _usage_by_log(study: Any, run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stored usage per call log with this machine's log put in, and this machine's usage."""
    logs = dict(study.user_attrs.get("bench_llm_logs") or {})
    here = llm_usage(run_dir)
    log_id = here.pop("log_id", None)
    if log_id is not None:
        logs[str(log_id)] = here
    return logs, here


def stored_llm_usage(study: Any, run_dir: Path) -> dict[str, Any]:
    """The run's LLM usage over every machine it ran on (`record_run`), with this machine's log."""
    logs, here = _usage_by_log(study, run_dir)
    if not logs:
        return here
    parts = list(logs.values())
    return {
        "calls": sum(int(p.get("calls", 0)) for p in parts),
        "tokens": sum(int(p.get("tokens", 0)) for p in parts),
        "seconds": round(sum(float(p.get("seconds", 0.0)) for p in parts), 3),
        "cost_usd": sum(float(p.get("cost_usd", 0.0)) for p in parts),
        "cache_hits": sum(int(p.get("cache_hits", 0)) for p in parts),
        "logged": True,
    }
