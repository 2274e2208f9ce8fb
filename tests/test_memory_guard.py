"""Issue 15, section 4: one LLM reply cannot destroy a person's or a well-supported insight.
A real `virtualmle tune` whose reflections (from a fake endpoint on 127.0.0.1) say REMOVE ins-1,
a real memory bank, and the real `virtualmle memory show`."""

from __future__ import annotations

import os
import subprocess
import sys

from fake_openai import fake_openai

from virtualmle.memory import MemoryBank
from virtualmle.memory.insights import Insight, InsightSet, TrialRef
from virtualmle.search.testing import AGENT_SPACE_YAML, TINY_SLICE_USERS

SPACE = AGENT_SPACE_YAML


def test_remove_reply_becomes_a_proposal_shown_by_memory_show(tmp_path):
    bank = MemoryBank(tmp_path / "memory")
    human = Insight(id="ins-1", text="on beauty keep dropout near 0.2", votes=5, source="human",
                    supporting=[TrialRef(study="older", trial=n) for n in range(4)])
    bank.save_insights(InsightSet(dataset="beauty", model="sasrec", next_id=2, insights=[human]))
    (tmp_path / "agent.yaml").write_text(SPACE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with fake_openai() as server:
        server.behaviour.insight_ops = [{"op": "REMOVE", "insight_id": "ins-1", "text": ""}]
        res = subprocess.run(
            [sys.executable, "-m", "virtualmle", "tune", "--data", "beauty", "--trials", "3",
             "--space", str(tmp_path / "agent.yaml"), "--storage", f"sqlite:///{tmp_path / 's.db'}",
             "--study", "guard", "--memory", str(bank.root), "--run-dir", str(tmp_path / "run"),
             "--slice-users", str(TINY_SLICE_USERS), "--max-epochs", "1", "--device", "cpu", "--quiet",
             "--transfer", "none", "--llm", server.spec(retries=0)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        reflections = sum(1 for r in server.requests
                          if r["body"]["response_format"]["json_schema"]["name"] == "Reflection")
    assert res.returncode == 0, res.stderr[-2000:]
    assert reflections >= 1  # the REMOVE reply was really given
    iset = bank.insights("beauty", "sasrec")
    kept = iset.get("ins-1")
    assert kept is not None and kept.model_dump() == human.model_dump()  # untouched
    assert [(p.op, p.id, p.source) for p in iset.proposals] == [("REMOVE", "ins-1", "llm")]  # once, however often asked
    show = subprocess.run([sys.executable, "-m", "virtualmle", "memory", "show", "--memory", str(bank.root),
                           "--data", "beauty"], capture_output=True, text=True, timeout=120,
                          env={**env, "COLUMNS": "200"})
    assert show.returncode == 0, show.stderr
    assert "proposed changes for a person" in show.stdout and "REMOVE" in show.stdout
    assert "written by a person" in show.stdout
