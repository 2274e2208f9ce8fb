"""Screen, then promote (agent/screen.py): the rounds' decisions, and a live study where the
promoted trial continues from its screen's checkpoint through the real loop and worker."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import optuna
import pytest

from virtualmle.agent import AgentConfig, VirtualMLEAgent
from virtualmle.agent.screen import costly, decide
from virtualmle.errors import ConfigError
from virtualmle.records import A_SCREEN, Outcome, TrialRecord
from virtualmle.search.loop import CHECKPOINT, SearchOptions, run_search
from virtualmle.search.method import RunningTrial, SearchContext
from virtualmle.search.space import load_space

M = "ndcg@10"


def _screen(number: int, value: float, rnd: int = 0, cut: bool = True) -> TrialRecord:
    return TrialRecord(number=number, params={"hidden": number}, outcome=Outcome.PRUNED if cut else Outcome.COMPLETE,
                       value=value, epochs=({"epoch": 2, "valid": {M: value}},),
                       user_attrs={A_SCREEN: {"round": rnd, "epochs": 2}, **({"stopped_by": "screen"} if cut else {})})


def _full(number: int, curve: list[float]) -> TrialRecord:
    return TrialRecord(number=number, params={"hidden": 99}, outcome=Outcome.COMPLETE, value=max(curve),
                       epochs=tuple({"epoch": i + 1, "valid": {M: v}} for i, v in enumerate(curve)))


def _decide(history, incumbent=None, issued=None, **kw):
    return decide(history, incumbent, issued or {}, width=2, epochs=2, metric=M, tolerance=0.1, **kw)


def test_a_finished_round_promotes_its_best_screen_and_says_why():
    inc = _full(0, [0.010, 0.020, 0.030])
    d = _decide([inc, _screen(1, 0.019), _screen(2, 0.021)], inc)
    assert d.promote is not None and d.promote.number == 2
    assert "best of 2 screened at 2 epochs" in d.reason and "#1 0.0190" in d.reason and "0.0200" in d.reason


def test_a_round_whose_best_trails_the_incumbent_at_the_same_epoch_is_settled_not_promoted():
    inc = _full(0, [0.010, 0.030, 0.040])
    d = _decide([inc, _screen(1, 0.020), _screen(2, 0.025)], inc)
    assert d.promote is None and d.settle is not None and d.settle["round"] == 0
    assert "trails the incumbent #0's 0.0300" in d.settle["reason"]
    assert d.screen_round == 1  # the next screen opens a new round


def test_rounds_wait_for_running_screens_and_count_what_storage_holds():
    # One screen of round 0 finished, another issued by this process still runs: open round 1.
    d = _decide([_screen(1, 0.02)], issued={0: 2})
    assert d.promote is None and d.screen_round == 1
    # After a restart nothing is issued: round 0 gets its second screen.
    assert _decide([_screen(1, 0.02)]).screen_round == 0
    # A promotion already proposed by this process is not proposed twice.
    assert _decide([_screen(1, 0.02), _screen(2, 0.03)], promoting={2}).promote is None
    # A screen that early-stopped before the cut is a full result: nothing to promote.
    d = _decide([_screen(1, 0.02, cut=False), _screen(2, 0.03, cut=False)])
    assert d.promote is None and "nothing to promote" in d.settle["reason"]



def _promoted(number: int, src: int, value: float, early: bool) -> TrialRecord:
    return TrialRecord(number=number, params={"hidden": src}, outcome=Outcome.COMPLETE, value=value,
                       epochs=({"epoch": 3, "valid": {M: value}},),
                       user_attrs={"promoted_from": src, "agent": {"kind": "promotion", "early": early}})


def test_a_screen_that_matches_the_incumbent_is_promoted_without_waiting_for_its_round():
    # Step 4's seed 0: screen #9 had 0.0615 after 5 epochs (incumbent 0.0603); its round waited
    # for another screen until the budget ran out, and a screen is never the study's choice.
    inc = _full(0, [0.010, 0.020, 0.030])
    d = _decide([inc, _screen(1, 0.031)], inc, issued={0: 2})
    assert d.promote is not None and d.promote.number == 1 and d.early
    assert "promoted early" in d.reason and "#0's best 0.0300" in d.reason
    # Below the incumbent's best: the round is waited for (the next screen joins round 1).
    d = _decide([inc, _screen(1, 0.029)], inc, issued={0: 2})
    assert d.promote is None and d.screen_round == 1
    # Not proposed twice while its promotion runs.
    d = _decide([inc, _screen(1, 0.031)], inc, issued={0: 2}, early={1})
    assert d.promote is None and d.screen_round == 1


def test_a_round_with_an_early_promotion_promotes_only_a_screen_that_beats_it():
    inc = _full(0, [0.010, 0.020, 0.030])
    early = _promoted(3, 1, 0.033, early=True)
    d = _decide([inc, _screen(1, 0.031), early, _screen(2, 0.030)], inc)
    assert d.promote is None and d.settle == {"round": 0, "reason": "its best screen was promoted early; no other beats it"}
    d = _decide([inc, _screen(1, 0.031), early, _screen(2, 0.032)], inc)
    assert d.promote is not None and d.promote.number == 2 and not d.early
    assert "beats #1 promoted early (0.0310)" in d.reason
    # An end-of-round promotion settles the round: no early promotion from it afterwards.
    assert _decide([inc, _screen(1, 0.031), _screen(2, 0.032), _promoted(3, 2, 0.033, early=False)],
                   inc).promote is None

def _curved_screen(number: int, curve: list[float], rnd: int = 0) -> TrialRecord:
    """A screen validated at epochs 1, 3 and 5, valued at its best."""
    return TrialRecord(number=number, params={"hidden": number}, outcome=Outcome.PRUNED, value=max(curve),
                       epochs=tuple({"epoch": 2 * i + 1, "valid": {M: v}} for i, v in enumerate(curve)),
                       user_attrs={A_SCREEN: {"round": rnd, "epochs": 5}, "stopped_by": "screen"})


def test_a_screen_falling_since_its_peak_below_the_incumbents_best_is_not_promoted():
    # Step 7's seed 1: the incumbent started slowly (0.0212 by epoch 5) and peaked at 0.0578;
    # screen #6 peaked at its first validation and fell, and was promoted for 459 s.
    inc = _full(4, [0.0097, 0.0101, 0.0132, 0.0173, 0.0212, 0.0400, 0.0578, 0.0570])
    fell, slow = _curved_screen(6, [0.0570, 0.0554, 0.0541]), _curved_screen(5, [0.0111, 0.0148, 0.0187])
    d = decide([inc, slow, fell], inc, {}, width=2, epochs=5, metric=M, tolerance=0.1)
    assert d.promote is None and d.settle is not None and d.settle["round"] == 0
    # The other screen is judged as before (0.0187 trails 0.0212 by more than 10%), and the
    # falling one is named with why it was left out.
    assert "best screen #5 0.0187" in d.settle["reason"] and "not promoted" in d.settle["reason"]
    assert "#6 0.0570 left out: falling since its peak, below the incumbent's best 0.0578" in d.settle["reason"]
    # Alone in its round it is not promoted either.
    d = decide([inc, fell, _curved_screen(7, [0.0560, 0.0550, 0.0540])], inc, {}, width=2, epochs=5, metric=M,
               tolerance=0.1)
    assert d.promote is None and d.settle["reason"].startswith("no screen worth continuing")


def test_a_falling_screen_above_the_incumbents_best_or_a_single_dip_is_still_promoted():
    inc = _full(4, [0.0097, 0.0212, 0.0550])
    # Step 7's seed 0: a screen that peaked at 0.0603, above the incumbent's 0.0550, is worth a
    # full run (it became the incumbent).
    above = _curved_screen(7, [0.0603, 0.0598, 0.0595])
    d = decide([inc, above, _curved_screen(5, [0.01, 0.02, 0.0255])], inc, {}, width=2, epochs=5, metric=M,
               tolerance=0.1)
    assert d.promote is not None and d.promote.number == 7 and "left out" not in d.reason
    # One lower validation after the peak is noise, not a trend: promoted; so are two drops that
    # leave the curve within 2% of its best.
    for curve in ([0.0500, 0.0530, 0.0525], [0.0530, 0.05299, 0.05298]):
        d = decide([inc, _curved_screen(9, [0.01, 0.02, 0.03], rnd=1), _curved_screen(8, curve, rnd=1)], inc, {},
                   width=2, epochs=5, metric=M, tolerance=0.5)
        assert d.promote is not None and d.promote.number == 8


SPACE = """\
model: sasrec
fixed: {max_len: 20, batch_size: 256, patience: 0, heads: 1, max_epochs: 3, negatives: 16}
params:
  hidden:  {type: categorical, choices: [16, 24, 32], default: 16, grid: [16, 24, 32]}
  dropout: {type: float, low: 0.0, high: 0.5, default: 0.2, grid: [0.1, 0.2, 0.3]}
"""


@pytest.fixture()
def beauty_dir() -> str:
    data_dir = os.environ.get("VIRTUALMLE_DATA_DIR", "")
    if not (Path(data_dir) / "Beauty.txt").is_file():
        pytest.skip("Beauty.txt not in VIRTUALMLE_DATA_DIR")
    return data_dir


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_a_live_study_screens_then_continues_the_best_from_its_checkpoint(tmp_path, beauty_dir, schedule):
    # A decaying schedule is screened too: the screen trains the full run's first epochs.
    (tmp_path / "space.yaml").write_text(SPACE.replace("max_epochs: 3,", f"max_epochs: 3, lr_schedule: {schedule},"))
    space = load_space("sasrec", tmp_path / "space.yaml")
    config = AgentConfig(reflection=False, memory=False, shortlist=1, transfer="none",
                         screen_epochs=1, screen_width=2, screen_tolerance=1.0)
    agent = VirtualMLEAgent(space=space, seed=0, llm=None, config=config)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    opts = SearchOptions(data="beauty", model="sasrec", trials=4, seed=0, space=space, slice_users=500,
                         run_dir=tmp_path / "run", keep_models=0, study_name="screen")
    run_search(agent, opts, storage=storage)
    trials = optuna.load_study(study_name="screen", storage=storage).trials
    base, s1, s2, promoted = trials
    assert base.state == optuna.trial.TrialState.COMPLETE and len(base.user_attrs["epochs"]) == 3
    for s in (s1, s2):
        assert s.state == optuna.trial.TrialState.PRUNED and s.user_attrs["stopped_by"] == "screen"
        assert s.user_attrs["outcome"] == "pruned"  # what a resumed study reads back, as the state says
        assert [e["epoch"] for e in s.user_attrs["epochs"]] == [1]
        assert (tmp_path / "run" / "trials" / f"{s.number:04d}" / CHECKPOINT).is_file()
        # A screen is compared, never the choice: its test split was not scored.
        assert s.user_attrs["test"] == {} and s.user_attrs["valid"][M] >= 0
    best = max((s1, s2), key=lambda s: (s.value if s.value is not None else s.user_attrs["valid"][M], -s.number))
    assert promoted.user_attrs["resume_from"] == best.number == promoted.user_attrs["promoted_from"]
    assert promoted.user_attrs["resumed_epoch"] == 1 and "continues from its checkpoint" in promoted.user_attrs["promotion"]
    assert promoted.params == best.params and promoted.state == optuna.trial.TrialState.COMPLETE
    assert set(promoted.user_attrs["test"]) >= {M} and set(base.user_attrs["test"]) >= {M}
    # The promoted trial's first epoch is the screen's own, not a new training of it.
    assert [e["epoch"] for e in promoted.user_attrs["epochs"]] == [1, 2, 3]
    assert promoted.user_attrs["epochs"][0] == best.user_attrs["epochs"][0]
    # Its seconds are those of epochs 2-3 only; the screen paid for epoch 1.
    assert promoted.user_attrs["seconds"] < sum(e["seconds"] for e in promoted.user_attrs["epochs"]) + 30


PROFILE = {"users": 500, "items": 3000, "interactions": 4000, "density": 2.7e-3, "seq_len": {"mean": 8.0}}


def _propose(tmp_path, space_yaml: str, history: list[TrialRecord], seed: int = 0, pending=None):
    from virtualmle.search.method import SearchContext

    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "space.yaml").write_text(space_yaml)
    space = load_space("sasrec", tmp_path / "space.yaml")
    config = AgentConfig(reflection=False, memory=False, shortlist=1, transfer="none",
                         screen_epochs=1, screen_width=2, screen_tolerance=1.0)
    agent = VirtualMLEAgent(space=space, seed=seed, llm=None, config=config)
    ctx = SearchContext(space=space, dataset="beauty", profile=PROFILE, model="sasrec", seed=seed, metric=M,
                        budget=10, study_name="st", run_dir=tmp_path / "run", history=history,
                        pending=list(pending or []))
    return agent.propose(ctx)


def _done(number: int, params: dict, value: float, **attrs) -> TrialRecord:
    return TrialRecord(number=number, params=params, outcome=Outcome.COMPLETE, value=value,
                       epochs=tuple({"epoch": i + 1, "valid": {M: value}} for i in range(3)), user_attrs=attrs)


def test_a_screened_configuration_is_not_proposed_again(tmp_path):
    # The full-fidelity run screened the same configuration three times: screens are left out of
    # the surrogate's observations, and the local candidates forgot they had been tried.
    space = SPACE.replace("choices: [16, 24, 32], default: 16, grid: [16, 24, 32]", "choices: [16, 24], default: 16, grid: [16, 24]")
    space = space.replace("  dropout: {type: float, low: 0.0, high: 0.5, default: 0.2, grid: [0.1, 0.2, 0.3]}\n", "")
    screen = TrialRecord(number=1, params={"hidden": 24}, outcome=Outcome.PRUNED, value=0.01,
                         epochs=({"epoch": 1, "valid": {M: 0.01}},),
                         user_attrs={A_SCREEN: {"round": 0, "epochs": 1}, "stopped_by": "screen"})
    assert _propose(tmp_path, space, [_done(0, {"hidden": 16}, 0.02), screen]) is None  # nothing left


def test_a_screen_that_repeated_the_incumbents_curve_marks_its_parameter_flat(tmp_path):
    from virtualmle.records import A_CHANGED, A_CONTEXT, A_PARENT

    # 0.1% below the incumbent at each validation (below its best, so not promoted early).
    screen = TrialRecord(number=1, params={"hidden": 16, "dropout": 0.3}, outcome=Outcome.PRUNED, value=0.01998,
                         epochs=tuple({"epoch": i + 1, "valid": {M: 0.01998}} for i in range(3)),
                         user_attrs={A_SCREEN: {"round": 0, "epochs": 3}, "stopped_by": "screen",
                                     A_PARENT: 0, A_CHANGED: ["dropout"]})
    proposal = _propose(tmp_path, SPACE, [_done(0, {"hidden": 16, "dropout": 0.2}, 0.02), screen])
    assert proposal.user_attrs["agent"]["flat"] == ["dropout"]
    assert set(proposal.user_attrs["changed"]) - {"dropout"}  # it moves something else
    assert "FLAT near the incumbent: changing dropout alone" in proposal.user_attrs[A_CONTEXT]
    # A screen whose curve differs says nothing of the kind.
    moved = dataclasses.replace(screen, epochs=tuple({"epoch": i + 1, "valid": {M: 0.015}} for i in range(3)),
                                value=0.015)
    proposal = _propose(tmp_path / "b", SPACE, [_done(0, {"hidden": 16, "dropout": 0.2}, 0.02), moved])
    assert proposal.user_attrs["agent"]["flat"] == [] and "FLAT" not in proposal.user_attrs[A_CONTEXT]


def test_a_change_of_training_length_alone_is_trained_in_full_not_screened(tmp_path):
    space = """\
model: sasrec
fixed: {max_len: 20, batch_size: 256, patience: 0, heads: 1, negatives: 16, hidden: 16, dropout: 0.2}
params:
  max_epochs: {type: categorical, choices: [3, 4], default: 3, grid: [3, 4]}
"""
    proposal = _propose(tmp_path, space, [_done(0, {"max_epochs": 3}, 0.02)])
    assert proposal.params["max_epochs"] == 4 and proposal.user_attrs["changed"] == ["max_epochs"]
    assert proposal.fidelity == {} and A_SCREEN not in proposal.user_attrs


def test_training_length_changes_that_would_repeat_the_parent_run_are_not_candidates():
    from virtualmle.agent.training_length import reruns_parent
    from virtualmle.agent.diagnostics import Observation

    early = Observation(number=0, params={"max_epochs": 200, "patience": 10, "lr_schedule": "constant"},
                        value=0.05, stopped="early_stop", last_epoch=42)
    # The full-fidelity run: the default early-stopped at epoch 42 of 200; 200 -> 170 trained it again.
    assert reruns_parent({"max_epochs": [200, 170]}, early)
    assert reruns_parent({"max_epochs": [200, 42]}, early)
    assert not reruns_parent({"max_epochs": [200, 30]}, early)  # cut before the stop: a new run
    assert not reruns_parent({"patience": [10, 20]}, early)  # trains past the stop
    assert not reruns_parent({"max_epochs": [200, 170], "lr": [1e-3, 3e-3]}, early)
    assert not reruns_parent({"max_epochs": [200, 170]}, early, schedule="cosine")  # the schedule stretches
    capped = Observation(number=0, params={"max_epochs": 50, "patience": 5}, value=0.05, stopped="max_epochs",
                         last_epoch=50)
    assert reruns_parent({"patience": [5, 10]}, capped)  # never stopped early with less patience
    assert reruns_parent({"patience": [5, 0]}, capped)  # 0: no early stopping at all
    assert not reruns_parent({"patience": [5, 3]}, capped)
    assert not reruns_parent({"max_epochs": [50, 100]}, capped)
    never = Observation(number=0, params={"max_epochs": 50, "patience": 0}, value=0.05, stopped="max_epochs",
                        last_epoch=50)
    assert not reruns_parent({"patience": [0, 5]}, never)  # may stop early now: a new run
    # A search's --max-epochs 30 ended a run whose own cap was 200: a cap of 100 ends there too.
    cut = Observation(number=0, params={"max_epochs": 200, "patience": 5}, value=0.05, stopped="max_epochs",
                      last_epoch=30)
    assert reruns_parent({"max_epochs": [200, 100]}, cut)
    assert not reruns_parent({"max_epochs": [200, 20]}, cut)
    unknown = Observation(number=0, params=early.params, value=0.05, last_epoch=None, stopped="early_stop")
    assert not reruns_parent({"max_epochs": [200, 170]}, unknown)
    # The second worker's first proposal, while the default still trains: wait for its curve.
    pending_default = Observation(number=-1, params=early.params, value=None)
    assert reruns_parent({"max_epochs": [200, 170]}, pending_default, running=True)
    assert not reruns_parent({"max_epochs": [200, 170], "hidden": [64, 128]}, pending_default, running=True)
    # Validating every 2 epochs instead of every one is training length too (step 4's seed 1 trained
    # its default again that way while the default still trained).
    assert reruns_parent({"eval_every": [1, 2]}, pending_default, running=True)
    # Patience counts validations: 10 validations of 1 epoch = 5 of 2 epochs, validated more coarsely.
    assert reruns_parent({"eval_every": [1, 2], "patience": [10, 5]}, early)
    assert not reruns_parent({"eval_every": [1, 2]}, early)  # 20 epochs of patience: trains past the stop
    assert not reruns_parent({"eval_every": [2, 1], "patience": [5, 10]}, early)  # finer: may find a better epoch
    assert reruns_parent({"eval_every": [1, 5]}, capped)  # after the cap: coarser, patience of 25 epochs
    # The default failed (a timeout, say): a shorter run is a remedy, not a repeat.
    assert not reruns_parent({"max_epochs": [200, 170]}, pending_default)
    # min_delta is training length: a smaller one after the cap resets patience at least as often
    # (the same run); a larger one, or any change after an early stop, may stop at another epoch.
    assert reruns_parent({"min_delta": [0.01, 0.0]}, capped)
    assert not reruns_parent({"min_delta": [0.0, 0.01]}, capped)
    assert not reruns_parent({"min_delta": [0.01, 0.0]}, early)
    assert reruns_parent({"min_delta": [0.0, 0.01]}, pending_default, running=True)


def test_the_agent_does_not_retrain_an_early_stopped_incumbent_with_a_longer_or_same_cap(tmp_path):
    space = """\
model: sasrec
fixed: {max_len: 20, batch_size: 256, patience: 1, heads: 1, negatives: 16, dropout: 0.2}
params:
  max_epochs: {type: categorical, choices: [4, 5, 6], default: 6, grid: [4, 5, 6]}
  hidden: {type: categorical, choices: [16, 24], default: 16, grid: [16, 24]}
"""
    stopped_at_3 = TrialRecord(number=0, params={"max_epochs": 6, "hidden": 16}, outcome=Outcome.COMPLETE,
                               value=0.02, stopped="early_stop",
                               epochs=tuple({"epoch": i + 1, "valid": {M: v}} for i, v in enumerate([0.01, 0.02, 0.019])))
    # hidden 24 did worse: without the rule, the surrogate's favourite is the incumbent again
    # with a cap of 4 or 5 epochs, which early-stops at epoch 3 as before.
    worse = TrialRecord(number=1, params={"max_epochs": 6, "hidden": 24}, outcome=Outcome.COMPLETE, value=0.01,
                        stopped="early_stop", epochs=({"epoch": 1, "valid": {M: 0.01}},), user_attrs={"parent": 0})
    for k in range(4):
        proposal = _propose(tmp_path / str(k), space, [stopped_at_3, worse], seed=k)
        assert proposal.params["hidden"] == 24 and proposal.params["max_epochs"] in (4, 5), proposal.params
    # With only the default pending (the full-fidelity study's second worker), never its length alone.
    longer = space.replace("[4, 5, 6], default: 6, grid: [4, 5, 6]", "[2, 3, 4, 5, 6, 7, 8], default: 6, grid: [2, 3, 4, 5, 6, 7, 8]")
    for k in range(8):
        proposal = _propose(tmp_path / f"p{k}", longer, [], seed=k, pending=[{"max_epochs": 6, "hidden": 16}])
        assert proposal.params["hidden"] == 24, proposal.params


def test_a_screen_far_costlier_than_the_finished_ones_is_stopped_with_its_numbers():
    finished = [30.0, 34.0, 40.0]  # median 34 s: the cap at 5x is 170 s
    # Over the cap already, with or without a validation.
    reason = costly(200.0, 0, 5, finished, factor=5)
    assert reason is not None and "200 s" in reason and "34 s" in reason and "5x" in reason
    # With a compute budget the cap is never below its share: a screen is stopped only when it is
    # also a large part of what the study may spend.
    assert costly(200.0, 0, 5, finished, factor=5, floor=400.0) is None
    reason = costly(450.0, 0, 5, finished, factor=5, floor=400.0)
    assert reason is not None and "cap of 400 s" in reason and "34 s" in reason
    # On its pace: 1 of 5 epochs in 60 s projects to 300 s.
    reason = costly(60.0, 1, 5, finished, factor=5)
    assert reason is not None and "300 s" in reason and "1 of 5" in reason
    # Within the cap, too few finished screens to judge by, or no cap: it runs on.
    assert costly(60.0, 2, 5, finished, factor=5) is None  # projects to 150 s
    assert costly(900.0, 1, 5, finished[:1], factor=5) is None
    assert costly(900.0, 1, 5, finished, factor=0) is None
    assert costly(100.0, 5, 5, finished, factor=2) is None  # a finished screen is never judged on pace


def test_a_screens_cost_is_projected_from_its_validated_epochs_not_its_start_up():
    finished = [30.0, 34.0, 40.0]  # the cap at 5x: 170 s
    # Step 6 stopped screens whose start-up (data, priors) and the time since their last
    # validation were counted as if every epoch had them: 100 s after 1 of 5 epochs read as 500 s.
    # Its epoch took 20 s and it was validated at 60 s: 60 + 4 x 20 = 140 s, within the cap.
    assert costly(100.0, 1, 5, finished, factor=5, epoch_seconds=20.0, validated_at=60.0) is None
    reason = costly(100.0, 1, 5, finished, factor=5, epoch_seconds=40.0, validated_at=60.0)
    assert reason is not None and "220 s" in reason and "1 of 5" in reason
    # Never projected below what it has already spent.
    reason = costly(180.0, 1, 5, finished, factor=5, epoch_seconds=1.0, validated_at=10.0)
    assert reason is not None and "180 s" in reason


def test_a_round_promotes_the_best_of_the_others_when_a_screen_was_stopped_for_its_cost():
    costly_one = TrialRecord(number=3, params={"hidden": 3}, outcome=Outcome.PRUNED, value=0.09,
                             epochs=({"epoch": 1, "valid": {M: 0.09}},),
                             user_attrs={A_SCREEN: {"round": 0, "epochs": 2}, "stopped_by": "method"})
    decision = _decide([_screen(1, 0.02), costly_one])
    # The stopped screen has finished: the round does not wait for it, and never promotes it
    # (its curve stops before the screen's length, so it is not comparable).
    assert decision.promote is not None and decision.promote.number == 1


def _ctx(tmp_path, history) -> SearchContext:
    space = load_space("sasrec")
    return SearchContext(space=space, dataset="beauty", profile=PROFILE, model="sasrec", seed=0, metric=M,
                         budget=10, study_name="st", run_dir=tmp_path, history=history)


def test_the_agent_watches_its_screens_cost_only_when_it_screens(tmp_path):
    finished = [TrialRecord(number=i, params={"hidden": 16 * i}, outcome=Outcome.PRUNED, value=0.02, seconds=30.0,
                            user_attrs={A_SCREEN: {"round": 0, "epochs": 5}, "stopped_by": "screen"}) for i in (1, 2)]
    ctx = _ctx(tmp_path, finished)
    slow = RunningTrial(number=3, params={"hidden": 256}, curve=(0.01,), epochs=1, max_epochs=5, seconds=100.0,
                        screen=True)
    screening = VirtualMLEAgent(space=ctx.space, seed=0, llm=None, config=AgentConfig(
        reflection=False, memory=False, transfer="none", screen_epochs=5))
    reason = screening.watch(ctx, slow)
    assert reason is not None and "500 s" in reason
    # A study with a compute budget of an hour: 15% of it, 540 s, is the cap's floor.
    ctx.time_budget = 3600.0
    assert screening.watch(ctx, slow) is None
    assert "540 s" in screening.watch(ctx, RunningTrial(**{**slow.__dict__, "seconds": 120.0}))
    # A screen already at or above the incumbent's best is spared: a first start of step 4 stopped
    # its best screen (0.0642 after one epoch, the incumbent had 0.0566) for its cost.
    ctx.time_budget = None
    ctx.history = finished + [_done(9, {"hidden": 64}, 0.008)]
    assert screening.watch(ctx, RunningTrial(**{**slow.__dict__, "curve": (0.004, 0.008)})) is None
    assert "500 s" in screening.watch(ctx, RunningTrial(**{**slow.__dict__, "curve": (0.004, 0.0079)}))
    # ... but not when a finished screen had more by the same epoch: step 4's seed 1 ran a 15-minute
    # screen (0.0627 after one epoch) while a 48 s screen of its round had 0.0631 by then.
    cheap = dataclasses.replace(finished[0], epochs=({"epoch": 1, "valid": {M: 0.009}},))
    ctx.history = [cheap, finished[1], _done(9, {"hidden": 64}, 0.008)]
    assert "500 s" in screening.watch(ctx, RunningTrial(**{**slow.__dict__, "curve": (0.0085,)}))
    assert screening.watch(ctx, RunningTrial(**{**slow.__dict__, "curve": (0.009,)})) is None
    # The incumbent is held to its best, not to what it had by the screen's epoch: step 7 tried the
    # latter, and a slow-starting incumbent made expensive screens below its best look ahead.
    slow_starter = TrialRecord(number=9, params={"hidden": 64}, outcome=Outcome.COMPLETE, value=0.02,
                               epochs=tuple({"epoch": e, "valid": {M: v}} for e, v in ((1, 0.002), (2, 0.004), (3, 0.02))))
    ctx.history = finished + [slow_starter]
    assert "500 s" in screening.watch(ctx, RunningTrial(**{**slow.__dict__, "curve": (0.019,)}))
    assert screening.watch(ctx, RunningTrial(**{**slow.__dict__, "curve": (0.02,)})) is None
    ctx.history = finished
    # A full (promoted or unscreened) trial of the same pace is not a screen: never capped.
    assert screening.watch(ctx, RunningTrial(**{**slow.__dict__, "screen": False})) is None
    # The cap off, and no hopeless watching asked for: the agent offers no watch hook at all.
    off = VirtualMLEAgent(space=ctx.space, seed=0, llm=None, config=AgentConfig(
        reflection=False, memory=False, transfer="none", screen_epochs=5, screen_cost_factor=0))
    assert off.watch is None


def test_a_screen_that_repeats_a_finished_flat_curve_is_stopped(tmp_path):
    from virtualmle.agent.flat import repeats

    # Step 12's seed 0: with strong score priors screen #9 ran 0.0609, 0.0609, 0.0609, 0.0613,
    # 0.0615; screens #13 and #14 (attn_dropout alone) repeated it to four decimals, 257 s each.
    def trial(number, curve, **kw):
        return TrialRecord(number=number, params={"hidden": number}, outcome=Outcome.PRUNED, value=max(curve),
                           epochs=tuple({"epoch": i + 1, "valid": {M: v}} for i, v in enumerate(curve)),
                           user_attrs={A_SCREEN: {"round": 2, "epochs": 5}, "stopped_by": "screen"}, **kw)
    nine = trial(9, [0.0609, 0.0609, 0.0609, 0.0613, 0.0615])
    rising = trial(2, [0.0095, 0.0208, 0.0314, 0.0385, 0.0463])  # not flat: no reference
    running = RunningTrial(number=13, params={"hidden": 13}, curve=(0.0609, 0.0609), epochs=2, max_epochs=5,
                           seconds=110.0, screen=True)
    why = repeats(running, [rising, nine], M, points=2)
    assert why is not None and "repeat trial #9's within 0.2%" in why and "0.0609-0.0615" in why
    # Not yet (one validation), not a match (0.5% off at epoch 2), not at the same epochs (the
    # running screen validated every other epoch), or the rule off.
    assert repeats(RunningTrial(**{**running.__dict__, "curve": (0.0609,), "epochs": 1}), [nine], M, points=2) is None
    assert repeats(RunningTrial(**{**running.__dict__, "curve": (0.0609, 0.0612)}), [nine], M, points=2) is None
    assert repeats(RunningTrial(**{**running.__dict__, "epochs": 4}), [nine], M, points=2) is None
    assert repeats(running, [nine], M, points=0) is None
    # Early epochs of a slow start look alike across configurations and are not flat: a screen
    # that matches the rising default's first two validations goes on (they diverged later).
    assert repeats(RunningTrial(**{**running.__dict__, "curve": (0.0095, 0.0208)}), [rising], M, points=2) is None
    # The agent's watch hook stops it when asked for (--screen-repeat), and only then.
    ctx = _ctx(tmp_path, [rising, nine])
    config = dict(reflection=False, memory=False, transfer="none", screen_epochs=5, screen_cost_factor=0)
    on = VirtualMLEAgent(space=ctx.space, seed=0, llm=None, config=AgentConfig(**config, screen_repeat=2))
    assert on.watch(ctx, running) == why
    assert on.watch(ctx, RunningTrial(**{**running.__dict__, "screen": False})) is None  # a full run goes on
    assert VirtualMLEAgent(space=ctx.space, seed=0, llm=None, config=AgentConfig(**config)).watch is None
    with pytest.raises(ConfigError, match="screen_repeat must be >= 0"):
        AgentConfig(screen_repeat=-1).check()


def test_after_a_resume_that_lost_the_default_run_the_agent_runs_it_again(tmp_path):
    # Step 4's seed 2: the session ended while the default trained; its trial was recorded as
    # interrupted (not in the history), the other worker's screens had finished, and the resumed
    # agent went on screening with no reference run at all.
    screens = [_screen(1, 0.02), _screen(2, 0.03)]
    proposal = _propose(tmp_path, SPACE, [dataclasses.replace(s, params={"hidden": 24, "dropout": 0.1 * s.number})
                                          for s in screens])
    assert proposal.user_attrs["agent"]["source"] == "default"
    assert proposal.params["hidden"] == 16 and proposal.params["dropout"] == 0.2 and proposal.fidelity == {}
    # Once it runs (pending) or ran, it is not proposed again.
    pending = _propose(tmp_path, SPACE, screens, pending=[{"hidden": 16, "dropout": 0.2}])
    assert pending.user_attrs["agent"]["source"] != "default"
    ran = _propose(tmp_path, SPACE, [_done(0, {"hidden": 16, "dropout": 0.2}, 0.01), *screens])
    assert ran.user_attrs["agent"]["source"] != "default"


def test_a_resumed_study_ranks_its_screens_by_their_best_epoch_as_the_live_process_did(tmp_path):
    # Step 4's seed 1: screen #8 peaked at 0.0622 (epoch 2) and fell to 0.0463 (epoch 5). Optuna
    # stores a pruned trial's last reported value, so after a resume the agent promoted #10 (0.0597)
    # instead of the round's best.
    from virtualmle.search.stored import record_from_trial

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    for number, curve in ((0, [0.02, 0.0622, 0.05, 0.0463]), (1, [0.03, 0.0597])):
        trial = study.ask()
        for step, value in enumerate(curve, 1):
            trial.report(value, step)
        trial.set_user_attr("valid", {M: max(curve)})
        trial.set_user_attr(A_SCREEN, {"round": 0, "epochs": len(curve)})
        trial.set_user_attr("stopped_by", "screen")
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    stored = study.get_trials()
    assert stored[0].value == pytest.approx(0.0463)  # what Optuna keeps
    records = [record_from_trial(t, M) for t in stored]
    assert [r.value for r in records] == [pytest.approx(0.0622), pytest.approx(0.0597)]
    assert _decide(records).promote.number == 0


def test_a_promotion_that_would_only_confirm_its_screen_continues_with_less_patience():
    from virtualmle.agent.screen import confirming

    def screen(curve):
        return _curved_screen(3, curve)

    # Step 11's seed 1: #8 peaked at 0.0622 and fell; its promotion ran 17 epochs (267 s) to
    # confirm the peak. Now it continues with the patience its screen already spent.
    fidelity, why = confirming(screen([0.0533, 0.0622, 0.0617, 0.0525, 0.0463]), M, patience=20, flat_patience=5)
    assert fidelity == {"patience": 3} and "peaked at 0.0622 3 validations back" in why and "ends at once" in why
    # Flat (within 3% of its best): at most 5 validations without gain, not the configuration's 43
    # (or none at all: patience 0 is no early stopping).
    flat = screen([0.0609, 0.0609, 0.0609, 0.0613, 0.0615])
    fidelity, why = confirming(flat, M, patience=43, flat_patience=5)
    assert fidelity == {"patience": 5} and "continues with patience 5, not 43" in why
    assert confirming(flat, M, patience=0, flat_patience=5)[0] == {"patience": 5}
    # Nothing to change: a flat screen whose patience is already short or not known (the
    # configuration's default) or with the rule off, a rising screen, one dip, a drop under 5%, or too few validations.
    # A configuration without early stopping (patience 0) is not cut at its peak: its run goes on.
    assert confirming(screen([0.0533, 0.0622, 0.0617, 0.0525, 0.0463]), M, patience=0, flat_patience=5) is None
    assert confirming(flat, M, patience=3, flat_patience=5) is None
    assert confirming(flat, M, patience=None, flat_patience=5) is None
    # The loop stores a fidelity with the trial (a resumed study runs it the same); a key a
    # checkpoint may not change is refused.
    from virtualmle.search.recording import fidelity_attrs
    from virtualmle.search.method import Proposal
    stored = fidelity_attrs(Proposal(params={}, resume_from=3, fidelity={"patience": 5, "min_delta": 0.005}))
    assert stored["fidelity"] == {"patience": 5, "min_delta": 0.005}
    with pytest.raises(ValueError, match="may set only .* not lr"):
        fidelity_attrs(Proposal(params={}, resume_from=3, fidelity={"lr": 0.1}))
    assert confirming(flat, M, patience=43, flat_patience=0) is None
    for curve in ([0.0095, 0.0208, 0.0314, 0.0385, 0.0463], [0.0500, 0.0530, 0.0400],
                  [0.0603, 0.0598, 0.0595, 0.0580], [0.0630, 0.0500]):
        assert confirming(screen(curve), M, patience=20, flat_patience=5) is None, curve


def test_the_agent_promotes_a_screen_past_its_peak_with_the_patience_it_spent(tmp_path):
    inc = _done(0, {"hidden": 16, "dropout": 0.2}, 0.02)
    peaked = TrialRecord(number=1, params={"hidden": 24, "dropout": 0.2}, outcome=Outcome.PRUNED, value=0.03,
                         epochs=tuple({"epoch": i + 1, "valid": {M: v}} for i, v in enumerate([0.03, 0.025, 0.02])),
                         user_attrs={A_SCREEN: {"round": 0, "epochs": 3}, "stopped_by": "screen"})
    rising = dataclasses.replace(peaked, number=2, params={"hidden": 32, "dropout": 0.2}, value=0.01,
                                 epochs=tuple({"epoch": i + 1, "valid": {M: v}} for i, v in enumerate([0.005, 0.008, 0.01])))
    space_yaml = SPACE.replace("patience: 0", "patience: 10")  # a configuration that stops early
    proposal = _propose(tmp_path, space_yaml, [inc, peaked, rising])
    assert proposal.resume_from == 1 and proposal.fidelity == {"patience": 2}
    assert "continues with patience 2, so it ends at once" in proposal.user_attrs["promotion"]
    # Switched off, the promotion keeps its configuration's patience.
    (tmp_path / "off").mkdir()
    (tmp_path / "off" / "space.yaml").write_text(space_yaml)
    space = load_space("sasrec", tmp_path / "off" / "space.yaml")
    agent = VirtualMLEAgent(space=space, seed=0, llm=None, config=AgentConfig(
        reflection=False, memory=False, shortlist=1, transfer="none", screen_epochs=1, screen_width=2,
        screen_tolerance=1.0, confirm_patience=0))
    ctx = SearchContext(space=space, dataset="beauty", profile=PROFILE, model="sasrec", seed=0, metric=M,
                        budget=10, study_name="st", run_dir=tmp_path / "off" / "run", history=[inc, peaked, rising])
    off = agent.propose(ctx)
    assert off.resume_from == 1 and off.fidelity == {} and "patience" not in off.user_attrs["promotion"]
    # Without early stopping (patience 0) the run is left to run: a later epoch may still lift it.
    kept = _propose(tmp_path / "no_stop", SPACE, [inc, peaked, rising])
    assert kept.resume_from == 1 and kept.fidelity == {}


class _ScreenThenConfirm:
    """Screens one configuration, then promotes it as the agent would (`confirming`)."""

    name = "plan"

    def __init__(self, params: dict) -> None:
        self.params = params

    def propose(self, ctx):
        from virtualmle.agent.screen import confirming
        from virtualmle.search.method import Proposal

        if not ctx.history and not ctx.pending:
            return Proposal(params=dict(self.params), fidelity={"max_epochs": 4}, user_attrs={A_SCREEN: {"round": 0}})
        if len(ctx.history) == 1 and not ctx.pending:
            confirm = confirming(ctx.history[0], M, patience=10, flat_patience=5)
            assert confirm is not None, ctx.history[0].curve(M)  # the screen peaked at epoch 2
            return Proposal(params=dict(self.params), resume_from=0, fidelity=confirm[0])
        return None

    def observe(self, ctx, record):
        return {}


def test_a_promotion_past_its_peak_ends_at_once_and_is_tested_at_its_best_epoch(tmp_path, beauty_dir):
    # A high learning rate on 600 users: validation peaks at epoch 2 and falls (seeded, deterministic).
    (tmp_path / "space.yaml").write_text(
        "model: sasrec\nfixed: {max_len: 20, batch_size: 128, patience: 10, heads: 1, blocks: 1, max_epochs: 6, "
        "negatives: 50, dropout: 0.0, hidden: 32}\nparams:\n"
        "  lr: {type: float, low: 0.001, high: 0.01, default: 0.01, grid: [0.01]}\n")
    space = load_space("sasrec", tmp_path / "space.yaml")
    storage = f"sqlite:///{tmp_path / 's.db'}"
    opts = SearchOptions(data="beauty", model="sasrec", trials=2, seed=0, space=space, slice_users=600,
                         run_dir=tmp_path / "run", keep_models=0, study_name="confirm")
    run_search(_ScreenThenConfirm({"lr": 0.01}), opts, storage=storage)
    screen, promoted = optuna.load_study(study_name="confirm", storage=storage).trials
    assert screen.state == optuna.trial.TrialState.PRUNED and screen.user_attrs["test"] == {}
    assert promoted.state == optuna.trial.TrialState.COMPLETE and promoted.user_attrs["fidelity"] == {"patience": 2}
    # No epoch trained again or added: the screen's four, ended by early stopping at once.
    assert promoted.user_attrs["epochs"] == screen.user_attrs["epochs"]
    assert promoted.user_attrs["stopped"] == "early_stop" and promoted.user_attrs["resumed_epoch"] == 4
    # Tested at its best epoch, the screen's peak: a result that may be the study's choice.
    assert promoted.user_attrs["best_epoch"] == 2 == screen.user_attrs["best_epoch"]
    assert promoted.value == screen.user_attrs["valid"][M] and set(promoted.user_attrs["test"]) >= {M}
