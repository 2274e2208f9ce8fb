"""Whole-configuration candidates: the agent's jumps away from the incumbent's neighbourhood.

Next to the local moves of `candidates.py` (one or two changes to the incumbent), three sources
propose complete configurations: ``global`` (a Latin-hypercube sample of the space), ``tpe`` (an
independent Optuna TPE sampler's suggestions from the study's history) and ``random`` (when
nothing is left near the incumbent). Each is legal in the space and not tried before; its
``changes`` are relative to the incumbent, like every candidate's.
"""

from __future__ import annotations

import random
from typing import Any

from virtualmle.agent.candidates import Candidate
from virtualmle.agent.diagnostics import Observation
from virtualmle.agent.space_view import SpaceView, random_config
from virtualmle.records import TrialRecord

__all__ = ["global_candidates", "random_candidate", "tpe_candidates"]


def _whole(cfg: dict[str, Any], incumbent: Observation, source: str, reason: str) -> Candidate:
    return Candidate(cfg, {k: [incumbent.params.get(k), v] for k, v in cfg.items()
                           if v != incumbent.params.get(k)}, source, reason, 0.0, [source])


def global_candidates(space: SpaceView, incumbent: Observation, tried: set[str], seed: int, n: int) -> list[Candidate]:
    """``global``: ``n`` configurations spread over the whole space, a Latin-hypercube sample
    (every axis's values used about equally often, independently permuted per axis), with
    illegal and already-tried points dropped (and added to ``tried``)."""
    if n <= 0:
        return []
    draw = random.Random(seed)
    columns: dict[str, list[Any]] = {}
    for name, axis in space.axes.items():
        vals = list(axis.values)
        col = [vals[(i * len(vals)) // n] for i in range(n)] if n >= len(vals) else draw.sample(vals, n)
        draw.shuffle(col)
        columns[name] = col
    out: list[Candidate] = []
    for i in range(n):
        cfg = {name: col[i] for name, col in columns.items()}
        if space.violation(cfg) is not None or space.key(cfg) in tried:
            continue
        tried.add(space.key(cfg))
        out.append(_whole(cfg, incumbent, "global", "a Latin-hypercube draw from the whole space"))
    return out


def tpe_candidates(space: SpaceView, search_space: Any, history: list[TrialRecord], incumbent: Observation,
                   tried: set[str], seed: int, n: int) -> list[Candidate]:
    """``tpe``: ``n`` suggestions of an independent Optuna TPE sampler fed the study's history
    (in memory), snapped to the view's legal values; illegal and tried ones are dropped."""
    if n <= 0:
        return []
    import warnings

    import optuna

    dists = search_space.distributions()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5)
        study = optuna.create_study(direction="maximize", sampler=sampler)
    for rec in history:
        params = {k: rec.params[k] for k in dists if k in rec.params}
        if len(params) != len(dists):
            continue
        try:
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions=dists, value=float(rec.value) if rec.ok else None,
                state=optuna.trial.TrialState.COMPLETE if rec.ok else optuna.trial.TrialState.FAIL))
        except (ValueError, TypeError):  # a value outside this space's distributions
            continue
    out: list[Candidate] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n):
            trial = study.ask(dists)
            try:
                cfg = space.snap_config(trial.params)
            except Exception:  # noqa: BLE001 - a suggestion the view cannot snap is just skipped
                cfg = None
            study.tell(trial, state=optuna.trial.TrialState.FAIL)  # next ask gives another point
            if cfg is None or space.violation(cfg) is not None or space.key(cfg) in tried:
                continue
            tried.add(space.key(cfg))
            out.append(_whole(cfg, incumbent, "tpe", "Optuna TPE's suggestion for this study"))
    return out


def random_candidate(space: SpaceView, incumbent: Observation, tried: set[str], seed: int) -> Candidate | None:
    """``random``: one uniformly random legal, untried configuration (when nothing is left near
    the incumbent), or None when the space is exhausted."""
    cfg = random_config(space, random.Random(seed), tried)
    if cfg is None:
        return None
    return _whole(cfg, incumbent, "random", "space exhausted locally")
