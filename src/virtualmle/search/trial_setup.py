"""From a trial's parameters to what the executor runs: the configuration and the `TrialSpec`.

A trial's configuration is the space's fixed values, the user's ``--set`` values and the trial's
parameters, with the backbone, metric and seed filled in and the user's epoch cap applied. A
proposal's fidelity (a screen: fewer epochs) is read back from the trial's stored user attrs, so a
trial enqueued by an earlier run and popped now trains as it was enqueued. A screen trains the first
epochs of its full run (its learning-rate schedule keeps the full span, ``schedule_epochs``), and
screens and promotions keep a resumable checkpoint in their trial directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from virtualmle.errors import ConfigError
from virtualmle.search.executor import TrialSpec
from virtualmle.search.model_keeper import trial_dir
from virtualmle.search.options import SearchOptions
from virtualmle.search.space import SearchSpace

__all__ = ["CHECKPOINT", "PreparedTrial", "prepare_trial", "trial_config"]

CHECKPOINT = "checkpoint.pt"  # a screened or promoted trial's resumable state, in its trial dir


@dataclass
class PreparedTrial:
    """A trial ready to submit (``spec``), or the reason it cannot run (``problem``)."""

    spec: TrialSpec | None = None
    screen: bool = False  # trains fewer epochs than its configuration says
    problem: str | None = None


def trial_config(params: dict[str, Any], options: SearchOptions, space: SearchSpace) -> dict[str, Any]:
    """The training configuration of a trial with ``params`` (before any screen fidelity)."""
    config = {**space.fixed, **options.fixed, **params}
    config.update(model=options.model, metric=options.metric)
    config.setdefault("seed", options.seed)
    if options.max_epochs is not None:
        # A cap: a searched max_epochs (the extended spaces) keeps a smaller value.
        config["max_epochs"] = min(config.get("max_epochs", options.max_epochs), options.max_epochs)
    return config


def prepare_trial(trial: optuna.Trial, params: dict[str, Any], options: SearchOptions, space: SearchSpace,
                  run_dir: Path, *, report_epochs: bool) -> PreparedTrial:
    """Check ``params`` against the space's constraints and `TrainConfig`, and build the spec."""
    from virtualmle.training import TrainConfig, default_params

    fidelity = dict(trial.user_attrs.get("fidelity") or {})
    resume_from = trial.user_attrs.get("resume_from")
    config = trial_config(params, options, space)
    full_epochs = config.get("max_epochs", default_params(options.model)["max_epochs"])
    screen = "max_epochs" in fidelity and fidelity["max_epochs"] < full_epochs
    if fidelity:  # never beyond the configuration's (or the user's cap's) epochs
        config.update(fidelity, max_epochs=min(fidelity.get("max_epochs", full_epochs), full_epochs))
    if screen:  # the first epochs of the full run: its learning-rate schedule spans the full length
        config["schedule_epochs"] = config.get("schedule_epochs") or full_epochs
    bad = space.violations(params)
    if bad:
        return PreparedTrial(problem=f"ConstraintViolation: {bad[0]}")
    try:
        TrainConfig(**config)
    except ConfigError as exc:
        return PreparedTrial(problem=f"ConfigError: {exc}")
    spec = TrialSpec(
        number=trial.number,
        data=options.data,
        config=config,
        trial_dir=str(trial_dir(run_dir, trial.number)),
        slice_users=options.slice_users,
        data_dir=options.data_dir,
        device=options.device,
        timeout=options.timeout_per_trial,
        report_epochs=report_epochs,
        data_options=dict(options.data_options),
        save_model=options.keep_models > 0,
        partial=screen,
    )
    if fidelity or resume_from is not None:  # screens and promotions keep resumable state
        spec.checkpoint = str(Path(spec.trial_dir) / CHECKPOINT)
    if resume_from is not None:
        spec.resume_from = str(trial_dir(run_dir, int(resume_from)) / CHECKPOINT)
    return PreparedTrial(spec=spec, screen=screen)
