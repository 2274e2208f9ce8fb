"""Rule accuracy: source rules judged on the committed Grid-729 table of real Beauty trials."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from virtualmle.bench.rule_accuracy import accuracy_line, judge, rule_accuracy
from virtualmle.bench.table import TrialTable
from virtualmle.memory import Action, CognitionSummary, Rule, TransferRule

TABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "tables" / "beauty_sasrec_grid729.csv"


@pytest.fixture(scope="module")
def table() -> TrialTable:
    return TrialTable.load(TABLE)


def brute_force(param: str, levels: list) -> list[float]:
    """Independent of the module: read the CSV and diff every neighbouring pair of complete points."""
    with TABLE.open() as f:
        lines = [ln for ln in f if not ln.startswith("#")]
    rows = list(csv.DictReader(lines))
    axes = ["hidden", "blocks", "dropout", "lr", "weight_decay", "batch_size"]
    val = {}
    for r in rows:
        if r["outcome"] == "complete":
            val[tuple(float(r[a]) for a in axes)] = float(r["valid_ndcg@10"])
    i = axes.index(param)
    out = []
    for key, v in val.items():
        if key[i] in levels[:-1]:
            up = list(key)
            up[i] = levels[levels.index(key[i]) + 1]
            if tuple(up) in val:
                out.append(val[tuple(up)] - v)
    return out


def test_a_rule_is_judged_on_every_neighbouring_pair_of_the_table(table):
    n, share = judge(table, Action(param="lr", direction="up"))
    deltas = [d for d in brute_force("lr", [1e-4, 3e-4, 1e-3]) if d != 0]
    assert n == len(deltas) and n > 400
    assert share == pytest.approx(sum(d > 0 for d in deltas) / len(deltas))
    n2, avoid = judge(table, Action(param="lr", direction="up", avoid=True))
    assert n2 == n and avoid == pytest.approx(1 - share)
    down = judge(table, Action(param="lr", direction="down"))[1]
    assert down == pytest.approx(1 - share)
    assert judge(table, Action(param="heads", direction="up")) == (0, None)  # not an axis of the table


def test_accuracy_counts_held_and_judged_rules(table):
    def rule(param: str, direction: str) -> TransferRule:
        return TransferRule(text=f"{direction} {param}", rule=Rule(condition={}, backbone="sasrec",
                            action=Action(param=param, direction=direction)), confidence=0.8, evidence=3)

    s = CognitionSummary(dataset="baby", model="sasrec",
                         rules=[rule("lr", "up"), rule("lr", "down"), rule("heads", "up")])
    v = rule_accuracy([s], table)
    assert [x.holds for x in v] == [x.agree > 0.5 if x.agree is not None else None for x in v]
    assert v[0].holds != v[1].holds and v[2].holds is None and v[2].pairs == 0
    assert accuracy_line(v) == "1/2 (50%)"


def test_an_unknown_transfer_arm_is_one_line_exit_2(tmp_path):
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "virtualmle", "bench", "--transfer-experiment", "--table", str(TABLE),
                        "--transfer-arms", "auto,bogus", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ), check=False)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == ["virtualmle: error: --transfer-arms: unknown arm(s) bogus; choose from auto, rules, trials, none"]
    assert not (tmp_path / "out" / "transfer").exists()  # refused before any work
