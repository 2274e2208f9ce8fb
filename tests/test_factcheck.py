"""LLM text enters memory only when it agrees with the code's facts (issue 12 section 2, "Text").

Checks on fixed sentences, then the real embedded model: its reflection and hypothesis texts
are stored as written only when they pass; otherwise the code's facts replace them, counted.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from virtualmle.agent.act import _llm_hypothesis
from virtualmle.agent.candidates import Candidate
from virtualmle.agent.diagnostics import Observation, diagnose
from virtualmle.agent.factcheck import check, code_text, hypothesis_facts, trial_facts
from virtualmle.agent.space_view import space_view
from virtualmle.search.space import load_space

NAMES = ["lr", "dropout", "hidden", "blocks", "weight_decay", "batch_size"]


@pytest.fixture(scope="module")
def view():
    return space_view(load_space("sasrec"))


def lr_win():
    """lr 3e-4 -> 1e-3 lifted ndcg@10 from 0.0019 to 0.0101, the curve still rising: underfitting."""
    inc = Observation(number=0, params={"lr": 3e-4, "dropout": 0.5}, value=0.0019, curve=[0.001, 0.0019])
    new = Observation(number=1, params={"lr": 1e-3, "dropout": 0.5}, value=0.0101, curve=[0.004, 0.0101],
                      stopped="max_epochs", base=0, changed=["lr"])
    return diagnose(new, [inc], inc, eval_users=1000)


def test_the_check_wants_the_changed_parameter_the_right_direction_and_the_code_verdict():
    d = lr_win()
    facts = trial_facts(d, NAMES)
    assert d.significance == "better" and d.code_verdict == "keep"
    assert check("Raising the learning rate helped: the model was underfitting", facts, verdict="keep") is None
    assert check("lr 3e-4 -> 1e-3 improved ndcg", facts) is None  # no direction word: nothing to contradict
    assert check("Lower the learning rate", facts) == "says lr down; the trial supports lr up"
    assert check("Raise lr", facts, verdict="discard") == "verdict 'discard', the code's is 'keep'"
    assert check("The trial just finished (when: The trial just...)", facts).startswith("names none of the changed")
    assert check("raise lr and lower dropout", facts) == "names dropout, which the trial did not change"
    hurt = trial_facts(SimpleNamespace(changed={"dropout": [0.2, 0.5]}, significance="worse", code_verdict="discard"),
                       NAMES)
    assert check("avoid raising dropout; keep it lower", hurt) is None  # 'lower' is the supported direction
    assert check("increase dropout further", hurt) == "says dropout up; the trial supports dropout down"
    noise = trial_facts(SimpleNamespace(changed={"hidden": [64, 128]}, significance="within_noise",
                                        code_verdict="inconclusive"), NAMES)
    assert check("a larger hidden size is better", noise).endswith("but the change was within noise")
    # the code's own line passes its own check, and carries the facts
    text = code_text(d)
    assert text.startswith("lr 3e-4 -> 1e-3: +0.0082 (") and "x noise)" in text
    assert text.endswith("still rising at the last epoch: underfitting")
    assert check(text, facts, verdict="keep") is None


def test_a_hypothesis_that_contradicts_its_move_is_replaced_by_the_codes(view):
    c = Candidate({"lr": 1e-3}, {"lr": [3e-4, 1e-3]}, "diagnostics", "underfitting: raise lr")
    good = SimpleNamespace(hypothesis="A higher learning rate trains faster in 3 epochs", mechanism="m", risk="r")
    bad = SimpleNamespace(hypothesis="The trial just finished", mechanism="m", risk="r")
    wrong = SimpleNamespace(hypothesis="Reduce the learning rate to stabilise training", mechanism="m", risk="r")
    assert _llm_hypothesis(good, c, view.names)["source"] == "llm"
    for reply, why in ((bad, "names none of the changed parameters (lr)"),
                       (wrong, "says lr down; the trial supports lr up")):
        h = _llm_hypothesis(reply, c, view.names)
        assert h["source"] == "code" and h["llm_rejected"] == why and h["rejected_text"] == reply.hypothesis
        assert h["text"].startswith("lr ") and "should improve the metric" in h["text"]
    assert check(_llm_hypothesis(bad, c, view.names)["text"], hypothesis_facts(c.changed, view.names)) is None


@pytest.mark.slow
def test_real_embedded_model_reflection_is_stored_only_when_it_agrees(tmp_path, view):
    pytest.importorskip("llama_cpp")
    from virtualmle.agent.llm_call import LLMCaller
    from virtualmle.agent.reflect import reflect
    from virtualmle.memory import StudyMemory, study_evidence
    from virtualmle.search.method import SearchContext

    d = lr_win()
    ctx = SearchContext(space=load_space("sasrec"), dataset="beauty", profile={}, model="sasrec", seed=0,
                        metric="ndcg@10", budget=3, study_name="fc", run_dir=tmp_path)
    mem = StudyMemory.from_records([{"number": 0, "params": {"lr": 3e-4}, "value": 0.0019},
                                    {"number": 1, "params": {"lr": 1e-3}, "value": 0.0101}])
    ev = study_evidence(mem.trials, noise=d.noise).single[(("lr", "up", None, False),)]
    facts = trial_facts(d, view.names)
    attrs: dict = {}
    out = reflect(LLMCaller(None), ctx, view, number=1, hypothesis={"text": "raise lr"}, diag=d, memory=mem,
                  insights_text="", compact=True, seed=0, attrs=attrs, evidence=ev)
    assert out is not None, attrs.get("reflection_error")
    assert attrs["reflection"] is out
    rejected = out.get("rejected_text", {})
    assert set(rejected) == {k for k, why in out["fact_check"].items() if why}
    # whatever the model wrote, what is stored agrees with the facts
    assert check(out["attribution"], facts) is None and check(out["rule"], facts, verdict=out["verdict"]) is None
    # the 135M model writes filler here ("The trial just finished ..."): both texts are the code's
    assert set(rejected) == {"attribution", "rule"}, out
    assert out["attribution"] == code_text(d, ev) and out["rule"] == ev.describe()
    assert out["rule"].startswith("lr 3e-4 -> 1e-3: +0.0082") and out["action_rule"] is None


def test_remember_keeps_filler_out_of_the_bank_and_counts_it_once(tmp_path, view):
    from virtualmle.agent.reflect import gate_text
    from virtualmle.agent.remember import remember, trial_evidence
    from virtualmle.memory import MemoryBank, StudyMemory
    from virtualmle.search.method import SearchContext

    d = lr_win()
    ctx = SearchContext(space=load_space("sasrec"), dataset="beauty", profile={}, model="sasrec", seed=0,
                        metric="ndcg@10", budget=3, study_name="fc", run_dir=tmp_path)
    mem = StudyMemory.from_records([{"number": 0, "params": {"lr": 3e-4, "dropout": 0.5}, "value": 0.0019},
                                    {"number": 1, "params": {"lr": 1e-3, "dropout": 0.5}, "value": 0.0101}])
    o = Observation(number=1, params={"lr": 1e-3, "dropout": 0.5}, value=0.0101, base=0, changed=["lr"],
                    attrs={"hypothesis": {"text": "x", "llm_rejected": "names none of the changed parameters (lr)"}})
    ev, pair = trial_evidence(mem, o, d)
    # the model's reply as the 135M model wrote it in the demo, plus a good insight and a wrong one
    refl = {"verdict": "keep", "attribution": "why it happened", "rule": "The trial just finished (when: The trial just...)",
            "llm_ops": [{"op": "ADD", "text": "A higher learning rate helps at 3 epochs"},
                        {"op": "ADD", "text": "lower the learning rate"}]}
    assert gate_text(refl, d, view, ev.of(pair)) == 2
    bank = MemoryBank(tmp_path / "bank")
    res = remember(bank, ctx, view, o, d, mem, refl)
    assert res["text_rejections"] == 4  # attribution, rule, one insight op, the hypothesis
    iset = bank.insights("beauty", "sasrec")
    texts = sorted(i.text for i in iset.insights)
    assert texts == ["A higher learning rate helps at 3 epochs",
                     "raise lr: lr 3e-4 -> 1e-3: +0.0082, +432% (6x noise), 1 trial on beauty (sasrec)"]
    assert iset.text_rejections == {"fc#1": 4} and iset.rejected_total == 4
    remember(bank, ctx, view, o, d, mem, refl)  # observed again after a resume: counted once
    again = bank.insights("beauty", "sasrec")
    assert again.rejected_total == 4 and len(again.insights) == 2 and all(i.votes == 1 for i in again.insights)


def test_the_html_report_shows_the_studys_rejections(tmp_path):
    import optuna

    from virtualmle.search.report import write_report
    from virtualmle.search.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="st", storage=url, direction="maximize")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for i, n in enumerate((0, 3, 2)):
        study.add_trial(optuna.trial.create_trial(params={"lr": 1e-3 * (i + 1)}, distributions=dist, value=0.01 * i,
                                                  user_attrs={"text_rejections": n}))
    page = write_report(open_storage(url), tmp_path / "report").read_text()
    assert "LLM texts rejected by the fact check: <b>5</b> (in 2 of 3 trials)" in page
