"""Credit and evidence: what the code writes into memory from a study's trials (issue 12 section 2).

A multi-parameter trial is evidence about the combination only; a rule's effect pools every
trial that made the move, and nothing within noise becomes a rule.
"""

from __future__ import annotations

import pytest

from virtualmle.memory import (
    ATTR_PARENT,
    Action,
    InsightSet,
    MemoryBank,
    StudyMemory,
    distill,
    ops_from_evidence,
    study_evidence,
)
from virtualmle.memory.evidence import Z_MIN

PROFILE = {"users": 1000, "items": 12101, "interactions": 9000, "density": 7.3e-4, "seq_len": {"mean": 8.9}}
NOISE = 0.001  # one run's standard deviation, as the agent's diagnostics store it


def study(rows: list[tuple[dict, float | None, int | None]], noise: float = NOISE) -> StudyMemory:
    """Trials (params, value or None for a failure, parent) with the agent's stored attributes."""
    recs = []
    for i, (params, value, parent) in enumerate(rows):
        recs.append({"number": i, "params": params, "value": value,
                     "outcome": "complete" if value is not None else "fail",
                     "user_attrs": {ATTR_PARENT: parent, "diagnostics": {"noise": noise}}})
    return StudyMemory.from_records(recs, study="st", dataset="beauty")


def ops_for(iset: InsightSet, mem: StudyMemory, trial: int) -> list:
    ev = study_evidence(mem.trials, noise=NOISE)
    pair = next(p for p in ev.pairs if p.trial == trial)
    return ops_from_evidence(iset, study="st", pair=pair, evidence=ev.of(pair), profile=PROFILE, failure="diverged")


def test_a_two_parameter_win_is_evidence_about_the_pair_never_two_rules(tmp_path):
    # the demo's case: dropout and lr changed together, +328.8%
    mem = study([({"dropout": 0.5, "lr": 3e-4}, 0.0019, None), ({"dropout": 0.2, "lr": 1e-3}, 0.0082, 0)])
    bank = MemoryBank(tmp_path)
    iset = bank.insights("beauty", "sasrec")
    ops = ops_for(iset, mem, 1)
    assert [(o.op, o.rule) for o in ops] == [("ADD", None)]
    assert {a.describe() for a in ops[0].combo} == {"lower dropout", "raise lr"}
    assert ops[0].text.startswith("together helped: dropout 0.5 -> 0.2 with lr 3e-4 -> 1e-3: +0.0063")
    assert "not about any one of them alone" in ops[0].text
    r = bank.apply_ops("beauty", "sasrec", ops, profile=PROFILE, source="code")
    assert r.applied == ["ins-1"]
    iset = bank.insights("beauty", "sasrec")
    assert iset.find_action(Action(param="lr", direction="up")) is None
    assert iset.find_action(Action(param="dropout", direction="down")) is None
    assert len(iset.insights) == 1 and iset.insights[0].rule is None and len(iset.insights[0].combo) == 2
    # the same trial observed again (a resumed study) changes nothing
    again = bank.apply_ops("beauty", "sasrec", ops_for(iset, mem, 1), profile=PROFILE, source="code")
    assert again.replayed and bank.insights("beauty", "sasrec").insights[0].votes == 1
    s = distill(mem, PROFILE, "sasrec", insights=bank.insights("beauty", "sasrec"))
    assert s.rules == [] and s.search_order == [] and s.findings == []
    assert len(s.combinations) == 1 and s.combinations[0].startswith("together helped: dropout 0.5 -> 0.2 with lr")


def test_a_rule_needs_the_pooled_evidence_of_several_trials_beyond_noise():
    rows = [({"lr": 1e-3, "dropout": 0.5}, 0.0300, None),
            ({"lr": 2e-3, "dropout": 0.5}, 0.0318, 0),   # +0.0018: 1.3 standard errors alone
            ({"lr": 4e-3, "dropout": 0.5}, 0.0338, 1),   # +0.0020: pooled 1.9
            ({"lr": 8e-3, "dropout": 0.5}, 0.0355, 2),   # +0.0017: pooled 2.2 -> a rule
            ({"lr": 1.6e-2, "dropout": 0.5}, 0.0340, 3)]  # -0.0015: pooled back within noise
    iset = InsightSet(dataset="beauty", model="sasrec", profile=PROFILE)
    for t in (1, 2):
        mem = study(rows[:t + 1])
        assert abs(study_evidence(mem.trials, noise=NOISE).single[((("lr", "up", None, False),))].z) < Z_MIN
        assert ops_for(iset, mem, t) == []
    mem = study(rows[:4])
    ops = ops_for(iset, mem, 3)
    assert [o.op for o in ops] == ["ADD"] and ops[0].rule.action == Action(param="lr", direction="up")
    assert ops[0].text.startswith("raise lr: lr 4e-3 -> 8e-3: +0.0018, +6% (2x noise), mean over 3 trials")
    iset.apply(ops, source="code")
    assert iset.get("ins-1").votes == 1
    # a later trial that contradicts it brings the pooled effect back within noise: the rule loses its vote
    ops = ops_for(iset, study(rows), 4)
    assert [(o.op, o.id) for o in ops] == [("DOWNVOTE", "ins-1")]
    iset.apply(ops, source="code")
    assert iset.get("ins-1") is None  # no votes left: pruned
    s = distill(study(rows), PROFILE, "sasrec")
    assert all(r.rule.action.param != "lr" or r.source == "marginal" for r in s.rules)
    assert "lr" not in [r.rule.action.param for r in s.rules if r.source == "trials"]


def test_failures_make_avoid_rules_for_one_move_and_combination_notes_for_several():
    rows = [({"lr": 1e-3, "hidden": 64}, 0.030, None),
            ({"lr": 1e-1, "hidden": 64}, None, 0),
            ({"lr": 1e-1, "hidden": 256}, None, 0)]
    mem = study(rows)
    iset = InsightSet(dataset="beauty", model="sasrec", profile=PROFILE)
    one = ops_for(iset, mem, 1)
    assert [o.op for o in one] == ["ADD"] and one[0].rule.action == Action(param="lr", direction="up", avoid=True)
    assert one[0].text == "avoid raising lr: lr 1e-3 -> 0.1: 1 failed, 1 trial (diverged) on beauty (sasrec)"
    two = ops_for(iset, mem, 2)
    assert [(o.op, o.rule) for o in two] == [("ADD", None)] and all(a.avoid for a in two[0].combo)
    assert two[0].text.startswith("together failed: hidden 64 -> 256 with lr 1e-3 -> 0.1")


def test_the_summary_reads_the_whole_trajectory_with_evidence_counts():
    base = {"lr": 1e-3, "dropout": 0.5, "hidden": 64}
    rows = [(base, 0.0100, None),
            ({**base, "lr": 3e-3}, 0.0160, 0),                  # lr up +0.006
            ({**base, "lr": 3e-3, "dropout": 0.2}, 0.0163, 1),  # dropout down: +0.0003, noise
            ({**base, "lr": 1e-2}, 0.0210, 1),                  # lr up +0.005
            ({**base, "lr": 1e-2, "hidden": 128}, 0.0212, 3),   # hidden up: noise
            ({**base, "lr": 1e-2, "hidden": 32}, 0.0205, 3),    # hidden down: noise
            ({**base, "lr": 3e-2, "dropout": 0.2}, 0.0150, 3)]  # two changes together: a combination
    s = distill(study(rows), PROFILE, "sasrec")
    trials = [r for r in s.rules if r.source == "trials"]
    assert [r.rule.action.describe() for r in trials] == ["raise lr"]
    lr = trials[0]
    assert lr.evidence == 2 and lr.effect == pytest.approx((0.006 / 0.010 + 0.005 / 0.016) / 2)
    assert "mean over 2 trials" in lr.text
    assert s.findings[0].param == "lr" and s.findings[0].evidence == 2
    assert s.findings[0].move == "raise lr"
    # the good region: lr's values among the best trials (top quarter, at least 3)
    assert s.findings[0].good == [1e-2, 1e-2] and s.findings[0].good_evidence == 3
    assert s.search_order[0] == "lr" and "hidden" not in s.search_order
    assert s.start_config["lr"] == 1e-2 and s.start_config["hidden"] == 128 and s.start_evidence == 7
    assert len(s.combinations) == 1 and s.combinations[0].startswith(
        "together hurt: dropout 0.5 -> 0.2 with lr 0.01 -> 0.03: -0.0060")


def test_a_combination_insight_survives_export_and_import(tmp_path):
    from virtualmle.memory.markdown import export_markdown, import_markdown

    mem = study([({"dropout": 0.5, "lr": 3e-4}, 0.0019, None), ({"dropout": 0.2, "lr": 1e-3}, 0.0082, 0)])
    bank = MemoryBank(tmp_path / "a")
    bank.apply_ops("beauty", "sasrec", ops_for(bank.insights("beauty", "sasrec"), mem, 1), profile=PROFILE,
                   source="code")
    (tmp_path / "x.md").write_text(export_markdown(bank))
    other = MemoryBank(tmp_path / "b")
    import_markdown(other, tmp_path / "x.md")
    ins = other.insights("beauty", "sasrec").insights
    assert len(ins) == 1 and ins[0].combo == bank.insights("beauty", "sasrec").insights[0].combo
    assert {a.describe() for a in ins[0].combo} == {"lower dropout", "raise lr"}


def test_a_jump_across_many_parameters_is_no_claim_and_does_not_break_the_step(tmp_path):
    # An extended-space search proposed a configuration 28 changes away from its parent: the
    # observe step crashed on the insight's 8-move limit. Such a jump is no reusable evidence.
    from virtualmle.memory.insights import MAX_COMBO

    names = [f"p{i}" for i in range(MAX_COMBO + 1)]
    base = dict.fromkeys(names, 1.0)
    jump = dict.fromkeys(names, 2.0)
    mem = study([(base, 0.010, None), (jump, 0.050, 0), (dict(base), 0.0101, None), (dict(jump), 0.0502, 2)])
    iset = MemoryBank(tmp_path).insights("beauty", "sasrec")
    assert ops_for(iset, mem, 1) == [] and ops_for(iset, mem, 3) == []
    eight = study([(dict(base), 0.010, None), ({**jump, "p0": 1.0}, 0.050, 0)])
    ops = ops_for(iset, eight, 1)  # exactly MAX_COMBO changes is still a combination note
    assert [o.op for o in ops] == ["ADD"] and len(ops[0].combo) == MAX_COMBO
