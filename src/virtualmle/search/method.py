"""The contract every search method speaks: `Method`, `Proposal`, `SearchContext` (and the trial
`TrialRecord` with its `Outcome`, which live in `virtualmle.records` and are re-exported here).

One loop (`virtualmle.search.loop.run_search`) asks a method for proposals, runs them through one
executor and records them into one Optuna study. Grid, random, TPE, the default-config control,
OPRO and the VirtualMLE agent differ only in how they implement `propose` (and `observe`), so
comparisons between them are fair by construction.

A method never sees test metrics: `TrialRecord` has no test field. Test metrics live only in the
Optuna user attribute ``test`` and are read once, for the final report of the best-on-validation
trial.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from virtualmle.records import Outcome, TrialRecord

__all__ = ["FIDELITY_KEYS", "Method", "Outcome", "Proposal", "RunningTrial", "SearchContext", "TrialRecord", "end_study",
           "sampler_for"]

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from virtualmle.search.space import SearchSpace


@dataclass(frozen=True)
class Proposal:
    """What a method wants run next.

    Attributes:
        params: a flat configuration (`virtualmle.training.TrainConfig` names); names left out
            take the search space's defaults. ``None`` means "let the study's Optuna sampler
            choose" (random, TPE).
        user_attrs: JSON-ready values stored on the trial, e.g. ``{"hypothesis": "..."}``.
        fidelity: overrides of how long *this* trial trains, not part of its configuration:
            ``max_epochs``, ``patience``, ``min_delta``, ``eval_every`` (`FIDELITY_KEYS`). A trial cut short by
            a smaller ``max_epochs`` is a screen: it keeps a checkpoint and is recorded as
            pruned (``stopped_by: screen``), never as a full observation.
        resume_from: the number of a screened trial of this study whose checkpoint this trial
            continues from (a promotion: same configuration, trained on to its own
            ``max_epochs`` instead of from scratch; `training.checkpoint`).
    """

    params: dict[str, Any] | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)
    fidelity: dict[str, Any] = field(default_factory=dict)
    resume_from: int | None = None


# What a proposal's ``fidelity`` may set: what a checkpoint allows a resumed run to change.
FIDELITY_KEYS = frozenset({"max_epochs", "patience", "min_delta", "eval_every"})


@dataclass
class SearchContext:
    """What a method may read when it proposes. The loop keeps it up to date.

    Attributes:
        space: the search space (distributions, defaults, constraints, grid values).
        dataset: dataset name (``beauty``).
        profile: `virtualmle.data.profile_dataset` descriptors of the (sliced) dataset.
        model: backbone (``sasrec`` or ``hstu``).
        seed: the study's seed.
        metric: the validation metric maximised (``ndcg@10``).
        budget: total trials of the study (interrupted trials excluded).
        time_budget: compute seconds the study may spend (``--budget 45m``), or None.
        study_name: the Optuna study name.
        run_dir: a directory the method may write its own files to (logs, memory).
        history: finished trials in completion order (test metrics never included).
        pending: params of trials running right now (for methods proposing with workers > 1).
    """

    space: SearchSpace
    dataset: str
    profile: dict[str, Any]
    model: str
    seed: int
    metric: str
    budget: int
    study_name: str
    run_dir: Path
    history: list[TrialRecord] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    time_budget: float | None = None

    @property
    def incumbent(self) -> TrialRecord | None:
        """The best completed trial on validation; ties go to the earlier trial."""
        done = [r for r in self.history if r.outcome is Outcome.COMPLETE and r.value is not None]
        return max(done, key=lambda r: (r.value, -r.number)) if done else None

    @property
    def trials_used(self) -> int:
        """Finished trials that count against the budget."""
        return sum(1 for r in self.history if r.outcome.counts_against_budget)

    @property
    def trials_left(self) -> int:
        """Trials that may still be started (budget minus finished minus running)."""
        return max(0, self.budget - self.trials_used - len(self.pending))


@dataclass(frozen=True)
class RunningTrial:
    """A trial while it trains, as the loop shows it to a method's ``watch`` hook.

    Attributes:
        number: its Optuna trial number.
        params: its configuration (what it would train to in full).
        curve: the validation metric at each validation so far.
        epochs: epochs trained by its last validation (0: none yet).
        max_epochs: epochs this run trains at most (a screen's fidelity is fewer than ``params``').
        seconds: compute seconds it has used so far (as the compute budget counts them).
        screen: it trains at a reduced fidelity (`Proposal.fidelity`), to be compared, not kept.
        epoch_seconds: seconds its validated epochs took, their validations included (the sum of
            its epoch logs' seconds; start-up and data loading excluded): its pace is
            ``epoch_seconds / epochs``.
        validated_at: compute seconds it had used at its last validation (as ``seconds`` counts).
    """

    number: int
    params: dict[str, Any]
    curve: tuple[float, ...] = ()
    epochs: int = 0
    max_epochs: int = 0
    seconds: float = 0.0
    screen: bool = False
    epoch_seconds: float = 0.0
    validated_at: float = 0.0


@runtime_checkable
class Method(Protocol):
    """A search method. Register it with `virtualmle.methods.register`.

    Required: ``name``, `propose`, `observe`. Optional, looked up with ``getattr``:

    - ``propose_batch(ctx, k) -> list[Proposal]``: up to ``k`` proposals at once, used when
      several workers are free (otherwise `propose` is called ``k`` times).
    - ``make_sampler(seed: int, workers: int) -> optuna.samplers.BaseSampler``: the sampler that
      fills ``Proposal(params=None)``; without it the loop uses a seeded ``RandomSampler``.
    - ``watch(ctx, trial: RunningTrial) -> str | None`` (absent or None: not used): called after
      each validation of a running trial and every few seconds between them; a string stops the
      trial (its epoch ends after the current batch; recorded as pruned, ``stopped_by: method``,
      the string as ``stop_reason``).
    - ``end(ctx) -> None``: the study is over (its budget is used up, or the method had nothing
      left to propose) and every trial is recorded in ``ctx.history``. Called once per run of the
      loop that ends that way, never after an interruption or an error; a resumed study that is
      already complete calls it again, so it must be idempotent (the agent distils its memory
      here).
    """

    name: str

    def propose(self, ctx: SearchContext) -> Proposal | None:
        """The next configuration to run, or None when the method has nothing left to try."""
        ...

    def observe(self, ctx: SearchContext, record: TrialRecord) -> dict[str, Any]:
        """See a finished trial; return extra JSON-ready user attrs to store with it."""
        ...


def end_study(method: Method, ctx: SearchContext) -> None:
    """Call the method's optional end-of-study hook (see `Method`)."""
    end = getattr(method, "end", None)
    if end is not None:
        end(ctx)


def sampler_for(method: Method, seed: int, workers: int) -> "optuna.samplers.BaseSampler":
    """The Optuna sampler a method wants, or a seeded RandomSampler."""
    import optuna

    make = getattr(method, "make_sampler", None)
    if make is not None:
        return make(seed, workers)
    return optuna.samplers.RandomSampler(seed=seed)
