"""The agent watching a running trial's curve (agent/watch.py, the loop's `watch` hook)."""

from __future__ import annotations

from pathlib import Path

import optuna

from virtualmle.agent import AgentConfig, VirtualMLEAgent
from virtualmle.agent.watch import hopeless
from virtualmle.bench.runner import BenchOptions, resolve_target
from virtualmle.bench.table import TableExecutor
from virtualmle.search.loop import SearchOptions, run_search

TABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "tables" / "beauty_sasrec_grid729.csv"


def test_a_curve_far_below_the_incumbent_is_stopped_with_its_numbers():
    incumbent = [0.010, 0.018, 0.022, 0.024]
    reason = hopeless([0.002, 0.003], incumbent, 0.024, horizon=4)
    assert reason is not None and "0.0030" in reason and "0.0180" in reason and "0.0240" in reason


def test_a_curve_that_can_still_catch_up_or_is_too_young_runs_on():
    incumbent = [0.010, 0.018, 0.022, 0.024]
    assert hopeless([0.009, 0.017], incumbent, 0.024, horizon=20) is None  # steep: +0.008 per epoch
    assert hopeless([0.002], incumbent, 0.024, horizon=4) is None  # one validation is not a curve
    assert hopeless([0.012, 0.019], incumbent, 0.024, horizon=4) is None  # ahead at the same epoch
    assert hopeless([0.002, 0.003], [], 0.0, horizon=4) is None  # no incumbent yet


def test_the_agent_stops_hopeless_trials_through_the_loop_and_says_why(tmp_path):
    target = resolve_target(BenchOptions(methods=["agent"], table=TABLE))
    table, space = target.table, target.space
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    config = AgentConfig(reflection=False, memory=False, shortlist=1, transfer="none", stop_hopeless=True)
    agent = VirtualMLEAgent(space=space, seed=0, llm=None, config=config)
    opts = SearchOptions(data=target.data, model=target.model, trials=15, seed=0, space=space,
                         slice_users=target.slice_users, max_epochs=target.max_epochs, run_dir=tmp_path / "run",
                         keep_models=0, metric=table.metric)
    run_search(agent, opts, storage=storage, executor=TableExecutor(table, workers=1))
    study = optuna.load_study(study_name="beauty-sasrec-agent-s0", storage=storage)
    stopped = [t for t in study.trials if t.user_attrs.get("stopped_by") == "method"]
    assert stopped, "no trial was stopped"
    for t in stopped:
        assert t.state == optuna.trial.TrialState.PRUNED and "below the incumbent's best" in t.user_attrs["stop_reason"]
        # A stopped trial costs only the share of the table's seconds it ran.
        assert float(t.user_attrs["seconds"]) < table.lookup(t.params).row.seconds


def _stopped_run(tmp_path, method, *, max_epochs: int, eval_every: int):
    """The one trial of a tiny real search that ``method`` watches (and stops)."""
    from virtualmle.search.space import load_space
    from virtualmle.search.storage import open_storage
    from virtualmle.search.testing import TINY_FIXED, TINY_SLICE_USERS, write_tiny_space

    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    opts = SearchOptions(data="beauty", model="sasrec", space=load_space(path=write_tiny_space(tmp_path)),
                         slice_users=TINY_SLICE_USERS, max_epochs=max_epochs, run_dir=tmp_path / "runs", device="cpu",
                         fixed={**TINY_FIXED, "eval_every": eval_every, "patience": 0}, trials=1, keep_models=1)
    summary = run_search(method, opts, storage=storage)
    (t,) = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    return t


class _SlowOnePlan:
    """A user method whose watch gives up on its trial by time alone, before any validation."""

    name = "slowplan"

    def __init__(self) -> None:
        self.seen: list = []

    def propose(self, ctx):
        from virtualmle.search.method import Proposal

        return None if ctx.history or ctx.pending else Proposal(params={"hidden": 32, "heads": 1})

    def observe(self, ctx, record):
        return {}

    def watch(self, ctx, trial):
        self.seen.append(trial)
        return f"too slow: {trial.seconds:.0f} s" if trial.seconds > 3 else None


def test_a_method_can_stop_a_trial_between_validations_and_it_ends_after_its_batch(tmp_path):
    """The loop looks at running trials every few seconds (not only at validations): a trial that
    validates only at the end is stopped mid-run through its stop file and recorded as pruned by
    the method with the reason. Given up, its cut epoch is not validated (that would only cost
    time: about 130 s for step 10's 380 s-per-epoch screen)."""
    method = _SlowOnePlan()
    t = _stopped_run(tmp_path, method, max_epochs=500, eval_every=500)
    assert t.state == optuna.trial.TrialState.PRUNED and t.user_attrs["stopped_by"] == "method"
    assert t.user_attrs["stop_reason"].startswith("too slow")
    assert t.user_attrs["epochs"] == [] and t.user_attrs["valid"] == {} and t.value is None
    assert method.seen and method.seen[0].epochs == 0 and method.seen[0].curve == ()
    assert method.seen[0].max_epochs == 500 and method.seen[0].screen is False
    # Given up on, it is never the study's choice: its test split was not scored either (the stop
    # file said so).
    assert t.user_attrs["test"] == {} and t.user_attrs["stopped"] == "pruned"


class _FirstLook(_SlowOnePlan):
    """A user method that gives up on its trial at its second validation (the reply path)."""

    name = "firstlook"

    def watch(self, ctx, trial):
        self.seen.append(trial)
        return "seen enough" if len(trial.curve) >= 2 else None


def test_a_trial_the_method_stops_at_a_validation_skips_its_test_and_reports_its_pace(tmp_path):
    method = _FirstLook()
    t = _stopped_run(tmp_path, method, max_epochs=6, eval_every=1)
    assert t.state == optuna.trial.TrialState.PRUNED and t.user_attrs["stopped_by"] == "method"
    assert [e["epoch"] for e in t.user_attrs["epochs"]] == [1, 2]
    assert t.user_attrs["test"] == {} and set(t.user_attrs["valid"]) >= {"ndcg@10"}
    # The watch hook saw the trial's pace: the seconds its validated epochs took, start-up
    # excluded, and the compute it had used at its last validation.
    looked = [s for s in method.seen if s.epochs == 2][0]
    logged = sum(e["seconds"] for e in t.user_attrs["epochs"])
    assert abs(looked.epoch_seconds - logged) < 1e-6 and looked.validated_at >= looked.epoch_seconds > 0

