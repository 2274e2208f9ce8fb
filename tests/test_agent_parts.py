"""Pure-code parts of the agent on the real shipped search spaces: snapping, validation of
proposals, candidate generation, plateau / coverage, diagnostics, the surrogate."""

from __future__ import annotations

import numpy as np
import pytest

from virtualmle.agent.candidates import RuleHint, generate_candidates, plateau_state
from virtualmle.agent.flat import flat_params, without_flat
from virtualmle.agent.global_candidates import global_candidates, tpe_candidates
from virtualmle.agent.space_view import ProposalRejected, random_config, space_view
from virtualmle.agent.diagnostics import Observation, best_of, curve_shape, diagnose, estimate_noise
from virtualmle.agent.surrogate import PriorTrial, Surrogate, axis_groups, rank_candidates
from virtualmle.search.space import load_space


@pytest.fixture(scope="module")
def view():
    return space_view(load_space("sasrec"))


@pytest.fixture(scope="module")
def default(view):
    return {n: p.default for n, p in load_space("sasrec").params.items()}


def test_snap_nearest_and_refuse_out_of_range(view):
    lr = view.axes["lr"]
    assert lr.snap("0.0009") == 0.001
    assert lr.snap(2.5e-4) == 3e-4
    with pytest.raises(ProposalRejected) as e:
        lr.snap("1.0")  # the value SmolLM2 proposes without a grammar
    assert e.value.reason == "out_of_range"
    assert lr.snap("1.0", strict=False) == 0.01
    for junk in ("fast", "nan", "", "1e-3; rm -rf /"):
        with pytest.raises(ProposalRejected) as e:
            lr.snap(junk)
        assert e.value.reason == "garbage"
    assert view.axes["tied"].snap("True") is True
    assert view.axes["optimizer"].snap(" AdamW ") == "adamw"
    with pytest.raises(ProposalRejected):
        view.axes["optimizer"].snap("sgd")


def test_window_zero_is_the_top(view):
    w = view.axes["window"]
    assert w.sorted_values()[-1] == 0
    assert w.step(0, "down") == 40
    assert w.step(0, "up") is None


def test_apply_changes_refusals(view, default):
    tried = {view.key(default)}
    cfg, changed = view.apply_changes(default, [("lr", "0.001")], tried=tried)
    assert cfg["lr"] == 0.001 and changed == {"lr": [3e-4, 0.001]}
    tried.add(view.key(cfg))
    cases = {
        "too_many_changes": [("lr", "0.001"), ("dropout", "0.3"), ("hidden", "64"), ("blocks", "2"), ("tied", "true")],
        "unknown_param": [("learning_rate", "0.001")],
        "no_change": [("lr", "0.0003")],
        "duplicate": [("lr", "0.0011")],  # snaps onto the configuration just tried
    }
    for reason, moves in cases.items():
        with pytest.raises(ProposalRejected) as e:
            view.apply_changes(default, moves, tried=tried)
        assert e.value.reason == reason
    # a value that is not on the axis is a violation; TrainConfig validation is part of the check
    assert view.violation({**default, "lr": 0.123}) is not None
    assert "divisible" in (view.check({**default, "hidden": 30, "heads": 4}) or "")


def obs(n, params, value, base=None, curve=None, changed=None, **kw):
    return Observation(number=n, params=params, value=value, curve=curve or [value or 0.0],
                       base=base, changed=changed or [], **kw)


def test_diagnostics_overfit_underfit_noise(default):
    o, u, peak = curve_shape([0.01, 0.03, 0.028, 0.025, 0.024], "early_stop")
    assert o and not u and peak == 2
    o, u, peak = curve_shape([0.01, 0.02, 0.03], "max_epochs")
    assert u and not o and peak == 3
    o, u, _ = curve_shape([0.01, 0.02, 0.03], "early_stop")
    assert not u
    inc = obs(0, default, 0.030, curve=[0.02, 0.03])
    better = obs(1, {**default, "lr": 0.001}, 0.036, base=0, curve=[0.02, 0.036], stopped="max_epochs")
    d = diagnose(better, [inc], inc)
    assert d.significance == "better" and d.improved and d.code_verdict == "keep"
    assert d.changed == {"lr": [3e-4, 0.001]} and d.underfitting
    close = obs(2, {**default, "dropout": 0.3}, 0.0302, base=0)
    d2 = diagnose(close, [inc], inc)
    assert d2.significance == "within_noise"
    failed = obs(3, {**default, "lr": 0.01}, None, base=0, error="diverged", state="failed")
    d3 = diagnose(failed, [inc], inc)
    assert d3.significance == "failed" and d3.failure == "diverged" and d3.code_verdict == "discard"
    # repeated configurations give a measured noise
    reps = [obs(i, default, v) for i, v in enumerate([0.030, 0.034, 0.026])]
    assert estimate_noise(reps, 0.03) == pytest.approx(np.std([0.030, 0.034, 0.026], ddof=1), rel=1e-6)
    assert best_of([inc, better, close]).number == 1


def test_candidates_from_diagnostics_and_rules(view, default):
    inc = obs(0, default, 0.03, curve=[0.01, 0.03, 0.028, 0.025, 0.024], stopped="early_stop")
    d = diagnose(inc, [], None)
    assert d.overfitting
    hints = [RuleHint(param="tied", value=True, confidence=0.9, source="transfer", text="tie embeddings"),
             RuleHint(param="hidden", direction="down", avoid=True, confidence=1.0, source="transfer")]
    cs = generate_candidates(view, inc, [inc], last=d, hints=hints)
    by_change = {c.describe(): c for c in cs.candidates}
    assert "dropout 0.2 -> 0.3" in by_change and "diagnostic" in by_change["dropout 0.2 -> 0.3"].sources
    assert by_change["tied False -> True"].source == "transfer"
    assert by_change["hidden 128 -> 64"].prior < by_change["hidden 128 -> 256"].prior  # avoided move
    assert any(len(c.changed) == 2 for c in cs.candidates)  # dropout + weight decay together
    assert all(len(c.changed) <= 2 for c in cs.candidates)
    assert all(view.violation(c.config) is None for c in cs.candidates)
    assert view.key(default) not in {view.key(c.config) for c in cs.candidates}


def test_plateau_forces_an_uncovered_parameter(view, default):
    hist = [obs(0, default, 0.03)]
    for i, lr in enumerate([1e-4, 1e-3, 3e-3], start=1):
        hist.append(obs(i, {**default, "lr": lr}, 0.02, base=0, changed=["lr"]))
    plateau, stale = plateau_state(hist, 3)
    assert plateau and stale == ["lr"]
    cs = generate_candidates(view, hist[0], hist, plateau_k=3)
    assert cs.plateau and cs.candidates
    assert all(any(n != "lr" for n in c.changed) for c in cs.candidates)
    assert not plateau_state(hist[:3], 3)[0]


def _epochs(values, start=1, step=1):
    return {start + i * step: v for i, v in enumerate(values)}


def test_a_parameter_whose_change_left_the_incumbents_curve_as_it_was_is_flat(view, default):
    # Step 8's seed 0: strong score priors; a screen changing dropout alone repeated the
    # incumbent's curve to four decimals through its best epoch (5).
    ref = [0.0609, 0.0609, 0.0609, 0.0613, 0.0615, 0.0614]
    inc = obs(12, default, 0.0615, by_epoch=_epochs(ref))
    same = obs(13, {**default, "dropout": 0.3}, 0.06146, base=12, changed=["dropout"],
               by_epoch=_epochs([0.0609, 0.0609, 0.0609, 0.06131, 0.06146]))
    moved = obs(15, {**default, "lr": 1e-4}, 0.0608, base=12, changed=["lr"], by_epoch=_epochs([0.0607, 0.0607, 0.0608]))
    assert flat_params(inc, [inc, same, moved]) == ["dropout"]
    # Not from another parent, with two changes, or fewer than three shared validations.
    assert flat_params(inc, [obs(13, same.params, 0.06, base=9, changed=["dropout"], by_epoch=same.by_epoch)]) == []
    assert flat_params(inc, [obs(13, same.params, 0.06, base=12, changed=["dropout", "lr"],
                                 by_epoch=same.by_epoch)]) == []
    assert flat_params(inc, [obs(13, same.params, 0.06, base=12, changed=["dropout"],
                                 by_epoch=_epochs(ref[:2]))]) == []
    # Matching only before the incumbent's best epoch says nothing of the rest of the run.
    early = obs(13, same.params, 0.0609, base=12, changed=["dropout"], by_epoch=_epochs(ref[:3]))
    assert flat_params(inc, [early]) == []
    # Epochs, not positions: validated every 2 epochs (2, 4, 6), it is compared at those epochs.
    sparse = obs(14, {**default, "dropout": 0.1}, 0.0614, base=12, changed=["dropout"],
                 by_epoch={2: 0.0609, 4: 0.0613, 6: 0.0614})
    assert flat_params(inc, [sparse]) == ["dropout"]
    # One trial with the same single change that moved the curve clears it.
    other = obs(16, {**default, "dropout": 0.1}, 0.058, base=12, changed=["dropout"],
                by_epoch=_epochs([0.0590, 0.0585, 0.0580]))
    assert flat_params(inc, [same, other]) == []
    # A change of training length alone replays the parent's first epochs by construction.
    shorter = obs(17, {**default, "max_epochs": 10}, 0.0615, base=12, changed=["max_epochs"], by_epoch=_epochs(ref))
    assert flat_params(inc, [shorter]) == []


def test_candidates_that_move_only_flat_parameters_are_dropped_while_others_remain(view, default):
    inc = obs(0, default, 0.03)
    cands = generate_candidates(view, inc, [inc]).candidates
    assert any(set(c.changed) == {"dropout"} for c in cands)
    kept = without_flat(cands, ["dropout"])
    assert kept and all(any(n != "dropout" for n in c.changed) for c in kept)
    only = [c for c in cands if set(c.changed) == {"dropout"}]
    assert without_flat(only, ["dropout"]) == only  # none would remain: all kept


def test_surrogate_learns_direction_and_uses_prior(view, default):
    configs, values = [], []
    for lr, v in [(1e-4, 0.020), (3e-4, 0.030), (1e-3, 0.036)]:
        configs.append({**default, "lr": lr})
        values.append(v)
    sur = Surrogate(view).fit(configs, values)
    mu, sd = sur.predict([{**default, "lr": 3e-3}, {**default, "lr": 1e-4}])
    assert mu[0] > mu[1]
    # with no trials of its own, prior trials from another dataset carry the shape
    prior = [PriorTrial({**default, "dropout": d}, v, "baby") for d, v in [(0.1, 0.05), (0.2, 0.04), (0.4, 0.02), (0.5, 0.01)]]
    sur2 = Surrogate(view).fit([default], [0.03], prior=prior)
    mu2, _ = sur2.predict([{**default, "dropout": 0.1}, {**default, "dropout": 0.3}])
    assert mu2[0] > mu2[1]


def test_ard_finds_the_parameter_that_does_not_matter(view, default):
    """The metric depends on lr only; weight_decay is varied just as much. With per-parameter
    length scales the surrogate stops being uncertain about weight_decay-only moves."""
    rng = np.random.default_rng(0)
    lrs = view.axes["lr"].sorted_values()
    wds = view.axes["weight_decay"].sorted_values()
    configs, values = [], []
    for i in range(12):
        lr, wd = lrs[i % len(lrs)], wds[int(rng.integers(len(wds)))]
        configs.append({**default, "lr": lr, "weight_decay": wd})
        values.append(0.02 + 0.004 * lrs.index(lr) + float(rng.normal(0, 1e-4)))
    ard = Surrogate(view).fit(configs, values)
    iso = Surrogate(view, ard=False).fit(configs, values)
    names = list(view.axes)
    scale = {n: float(np.atleast_1d(ard._gp.ls)[g.start]) for n, g in zip(names, axis_groups(view))}
    assert scale["weight_decay"] > scale["lr"]
    # an untried weight_decay at a tried lr: ARD is surer of it than the isotropic GP
    probe = [{**default, "lr": lrs[2], "weight_decay": w} for w in wds]
    probe = [c for c in probe if view.key(c) not in {view.key(x) for x in configs}]
    assert probe
    assert float(ard.predict(probe)[1].mean()) < float(iso.predict(probe)[1].mean())


def test_ranking_ties_not_by_list_order(view, default):
    inc = obs(0, default, 0.03)
    cs = generate_candidates(view, inc, [inc])
    sur = Surrogate(view).fit([default], [0.03])
    firsts = {rank_candidates(list(cs.candidates), sur, rng=np.random.default_rng(s))[0].describe() for s in range(8)}
    assert len(firsts) > 1


def test_random_config_is_legal_and_new(view, default):
    import random
    cfg = random_config(view, random.Random(0), {view.key(default)})
    assert cfg is not None and view.violation(cfg) is None and view.key(cfg) != view.key(default)


def test_expected_improvement_trades_mean_against_uncertainty():
    from virtualmle.agent.surrogate import expected_improvement

    ei = expected_improvement(np.array([1.0, 0.0, 0.0, 1.2]), np.array([0.1, 0.1, 1.0, 0.0]), best=1.0)
    assert ei[2] > ei[1] > 0  # far from the data (uncertain) beats a sure loss
    assert ei[3] == pytest.approx(0.2, abs=1e-6)  # a sure gain is worth exactly the gain
    assert ei[0] == pytest.approx(0.1 / np.sqrt(2 * np.pi), rel=1e-6)


def _records(space, values):
    from virtualmle.search.method import Outcome, TrialRecord

    d = space.defaults()
    lrs = [1e-4, 3e-4, 1e-3, 3e-3]
    return [TrialRecord(number=i, params={**d, "lr": lrs[i % 4], "dropout": [0.1, 0.3][i // 4 % 2]},
                        outcome=Outcome.COMPLETE, value=v) for i, v in enumerate(values)]


def test_hybrid_pool_has_global_and_tpe_candidates(tmp_path):
    """Hybrid mode ranks local moves together with whole-space draws and TPE's suggestions (each
    recorded by kind, never an already-tried configuration)."""
    from virtualmle.agent import VirtualMLEAgent
    from virtualmle.search.method import SearchContext

    space = load_space("sasrec")
    history = _records(space, [0.02, 0.03, 0.035, 0.01, 0.021, 0.032, 0.036, 0.012])
    ctx = SearchContext(space=space, dataset="beauty", profile={"users": 800}, model="sasrec", seed=0,
                        metric="ndcg@10", budget=20, study_name="pool", run_dir=tmp_path, history=history)
    agent = VirtualMLEAgent(space=space, seed=0, memory=False, reflection=False, shortlist=1, explore=32, tpe=3)
    tried = {agent.view.key(r.params) for r in history}
    tpe = tpe_candidates(agent.view, space, ctx.history, best_of(agent.observations(ctx)), set(tried), 1, 3)
    assert tpe and all(c.source == "tpe" and agent.view.violation(c.config) is None for c in tpe)
    assert not {agent.view.key(c.config) for c in tpe} & tried
    prop = agent.propose(ctx)
    step = prop.user_attrs["agent"]
    assert step["pool"]["global"] > 0 and step["pool"]["tpe"] > 0 and step["pool"]["local"] > 0
    assert step["kind"] in ("local", "rule", "global", "tpe")
    assert agent.view.key(prop.params) not in tried
    # more draws than values per axis: a Latin hypercube uses every value of every axis
    lhs = global_candidates(agent.view, best_of(agent.observations(ctx)), set(tried), 2, 96)
    assert len(lhs) > 48 and all(agent.view.violation(c.config) is None for c in lhs)
    for name, axis in agent.view.axes.items():
        assert len({agent.view.key({name: c.config[name]}) for c in lhs}) == len(axis.values), name
