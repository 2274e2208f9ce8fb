"""`virtualmle memory show | export | import | distill` through real subprocesses and real storage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from virtualmle.memory import SCHEMA_VERSION, InsightOp, MarkdownFormatError, MemoryBank, StudyMemory, ops_from_evidence, study_evidence
from virtualmle.memory.markdown import export_markdown, parse_markdown

optuna.logging.set_verbosity(optuna.logging.WARNING)

PROFILE = {"users": 19412, "items": 11924, "interactions": 167597, "density": 7.24e-4, "seq_len": {"mean": 8.63}}
DIST = {"dropout": optuna.distributions.FloatDistribution(0.0, 0.9),
        "lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
        "blocks": optuna.distributions.IntDistribution(1, 4)}


def cli(*args: str, memory: Path | None = None, env_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    env.pop("VIRTUALMLE_MEMORY_DIR", None)
    if env_dir is not None:
        env["VIRTUALMLE_MEMORY_DIR"] = str(env_dir)
    extra = ["--memory", str(memory)] if memory is not None else []
    return subprocess.run([sys.executable, "-m", "virtualmle", "memory", *args, *extra],
                          capture_output=True, text=True, env=env, timeout=120)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("virtualmle: error:") and "Traceback" not in r.stderr
    return lines[0]


def make_real_study(url: str, name: str = "toys-sasrec-agent-0") -> None:
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.set_user_attr("dataset", "toys")
    study.set_user_attr("model", "sasrec")
    study.set_user_attr("profile", PROFILE)
    rows = [({"dropout": 0.5, "lr": 1e-3, "blocks": 2}, 0.0310),
            ({"dropout": 0.3, "lr": 1e-3, "blocks": 2}, 0.0335),
            ({"dropout": 0.3, "lr": 1e-3, "blocks": 1}, 0.0345),
            ({"dropout": 0.3, "lr": 1e-2, "blocks": 1}, 0.0201),
            ({"dropout": 0.2, "lr": 1e-3, "blocks": 1}, 0.0349)]
    for params, value in rows:
        study.add_trial(optuna.trial.create_trial(params=params, distributions=DIST, value=value))


def seeded_bank(root: Path) -> MemoryBank:
    bank = MemoryBank(root)
    iset = bank.insights("toys", "sasrec")
    mem = StudyMemory.from_records([{"number": 0, "params": {"dropout": 0.5, "lr": 1e-3}, "value": 0.0310},
                                    {"number": 1, "params": {"dropout": 0.3, "lr": 1e-3}, "value": 0.0335}])
    ev = study_evidence(mem.trials, noise=0.0005)
    ops = ops_from_evidence(iset, study="toys-sasrec-agent-0", pair=ev.pairs[0], evidence=ev.of(ev.pairs[0]),
                            profile=PROFILE)
    ops.append(InsightOp(op="ADD", text="compact models with tied embeddings work on short sequences"))
    bank.apply_ops("toys", "sasrec", ops, profile=PROFILE, source="code")
    return bank


def test_distill_from_real_optuna_study_then_show(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    make_real_study(url)
    mem = tmp_path / "bank"
    seeded_bank(mem)
    r = cli("distill", "--storage", url, "--study", "toys-sasrec-agent-0", memory=mem)
    assert r.returncode == 0, r.stderr
    assert "distilled 5 trials of 'toys-sasrec-agent-0'" in r.stdout and "best ndcg@10 0.034900" in r.stdout
    path = mem / "summaries" / "toys__sasrec__toys-sasrec-agent-0.json"
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == SCHEMA_VERSION and doc["kind"] == "summary"
    assert doc["start_config"] == {"dropout": 0.2, "lr": 1e-3, "blocks": 1}
    assert doc["search_order"][0] == "lr"  # the 10x lr jump lost 42%: the largest measured effect
    top = doc["rules"][0]
    assert top["rule"]["action"] == {"param": "lr", "direction": "up", "value": None, "avoid": True}
    actions = [r_["rule"]["action"]["param"] for r_ in doc["rules"]]
    # blocks 2 -> 1 (+0.0010) is within noise (3% of the median value per run): no rule; dropout's rule
    # is the bank's insight, merged in
    assert set(actions) == {"dropout", "lr"}
    # the bank's human-readable insight without a rule is not a transferable rule; the one with a rule merged
    assert all(r_["text"] != "compact models with tied embeddings work on short sequences" for r_ in doc["rules"])
    assert len(doc["trials"]) == 5
    r = cli("show", "--data", "toys", memory=mem)
    assert r.returncode == 0, r.stderr
    assert "insights: toys x sasrec" in r.stdout and "cognition summary: toys x sasrec" in r.stdout
    assert "avoid raising lr" in r.stdout and "compact models with tied embeddings" in r.stdout
    assert "search order: lr" in r.stdout


def test_distill_errors_are_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    make_real_study(url)
    line = one_error_line(cli("distill", "--storage", url, "--study", "nope", memory=tmp_path / "m"))
    assert "no study named 'nope'" in line
    optuna.create_study(study_name="bare", storage=url)
    line = one_error_line(cli("distill", "--storage", url, "--study", "bare", memory=tmp_path / "m"))
    assert "no completed trial" in line
    assert not (tmp_path / "m" / "summaries").exists()


def test_export_edit_import_round_trip(tmp_path):
    mem = tmp_path / "bank"
    seeded_bank(mem)
    md = tmp_path / "memory.md"
    r = cli("export", "--out", str(md), env_dir=mem)  # the bank found through $VIRTUALMLE_MEMORY_DIR
    assert r.returncode == 0, r.stderr
    text = md.read_text()
    assert "wrote" in r.stdout and "(3 items)" in r.stdout
    assert text.count("```yaml") == 3 and "kind: insight_set" in text and "id: ins-1" in text
    # a person edits: more votes and a different direction on ins-1, deletes the ins-2 block
    blocks = text.split("\n### ")
    ins1 = next(b for b in blocks if b.startswith("ins-1"))
    ins2 = next(b for b in blocks if b.startswith("ins-2"))
    edited_ins1 = ins1.replace("votes: 1", "votes: 7").replace("direction: down", "direction: up")
    assert edited_ins1 != ins1
    edited = text.replace(ins1, edited_ins1).replace("\n### " + ins2, "")
    md.write_text(edited)
    r = cli("import", str(md), memory=mem)
    assert r.returncode == 0, r.stderr
    assert "imported 1 insights" in r.stdout
    iset = MemoryBank(mem).insights("toys", "sasrec")
    assert [i.id for i in iset.insights] == ["ins-1"]
    assert iset.insights[0].votes == 7 and iset.insights[0].rule.action.direction == "up"
    assert iset.next_id == 3  # ins-2 is never reused
    # a second export of the imported bank carries the edits
    again = export_markdown(MemoryBank(mem))
    assert "votes: 7" in again and "direction: up" in again and "ins-2" not in again


def test_malformed_markdown_names_the_line_and_writes_nothing(tmp_path):
    mem = tmp_path / "bank"
    seeded_bank(mem)
    md = tmp_path / "memory.md"
    md.write_text(export_markdown(MemoryBank(mem)))
    # a valid edit AND a YAML syntax error: the valid edit must not be applied either
    text = md.read_text().replace("compact models", "EDITED compact models").replace("votes: 1", "votes: [1", 1)
    md.write_text(text)
    bad_line = next(n for n, line in enumerate(text.splitlines(), 1) if "votes: [1" in line)
    before = {p: p.read_bytes() for p in mem.rglob("*.json")}
    line = one_error_line(cli("import", str(md), memory=mem))
    assert str(md) in line and "invalid YAML" in line and f"line {bad_line}" in line
    assert {p: p.read_bytes() for p in mem.rglob("*.json")} == before


def test_schema_errors_unclosed_blocks_and_unknown_kinds_name_the_line(tmp_path):
    text = export_markdown(seeded_bank(tmp_path / "bank")).replace("direction: down", "direction: sideways", 1)
    bad = next(n for n, ln in enumerate(text.splitlines(), 1) if "sideways" in ln)
    fence = max(n for n, ln in enumerate(text.splitlines(), 1) if ln == "```yaml" and n < bad)
    with pytest.raises(MarkdownFormatError, match=f"^x.md: line {fence}: insight ins-1: rule.action.direction"):
        parse_markdown(text, "x.md")
    with pytest.raises(MarkdownFormatError, match="line 3: yaml block is never closed"):
        parse_markdown("# x\n\n```yaml\nkind: insight\n", "x.md")
    with pytest.raises(MarkdownFormatError, match="line 2: unknown kind 'shell'"):
        parse_markdown("intro\n```yaml\nkind: shell\ndataset: toys\nmodel: sasrec\n```\n", "x.md")
    dup = "```yaml\nkind: insight\ndataset: toys\nmodel: sasrec\nid: ins-1\ntext: a\n```\n"
    with pytest.raises(MarkdownFormatError, match="line 9: insight id ins-1 already used at line 1"):
        parse_markdown(dup + "\n" + dup, "x.md")


def test_newer_bank_is_refused_by_the_cli(tmp_path):
    mem = tmp_path / "bank"
    seeded_bank(mem)
    p = mem / "insights" / "toys__sasrec.json"
    doc = json.loads(p.read_text())
    doc["schema_version"] = SCHEMA_VERSION + 1
    p.write_text(json.dumps(doc))
    line = one_error_line(cli("show", memory=mem))
    assert f"schema_version {SCHEMA_VERSION + 1} is newer" in line and "toys__sasrec.json" in line
