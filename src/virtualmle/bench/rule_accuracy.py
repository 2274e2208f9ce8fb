"""Rule accuracy: do rules distilled on source datasets point the right way on a target table?

A complete trial table knows the answer for every one-parameter move: for a rule on parameter
``p`` we take every pair of table points that differ only in ``p``, at neighbouring levels, and
count the pairs where the rule's move (``raise p``, ``lower p``, ``set p=v``) improved the
validation metric. The rule *holds* when its move improved more than half of those pairs (for an
``avoid`` rule: when it hurt more than half). Rules on parameters the table does not vary cannot
be judged and are listed as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from virtualmle.bench.table import TrialTable
from virtualmle.records import Outcome, config_key


@dataclass(frozen=True)
class RuleVerdict:
    """One source rule judged on the table."""

    source: str  # source dataset
    rule: str  # e.g. "raise lr"
    evidence: int  # trials behind it on the source
    origin: str  # "trials" | "marginal" | "insight" | "human"
    pairs: int  # table pairs that bear on it (0: not judged)
    agree: float | None  # share of those pairs where the move went the rule's way

    @property
    def holds(self) -> bool | None:
        return None if self.agree is None else self.agree > 0.5


def move_outcomes(table: TrialTable, param: str) -> list[tuple[Any, Any, float]]:
    """(lower level, next level, metric change going up) for every pair of completed table points
    that differ only in `param`, at neighbouring levels."""
    if param not in table.axes:
        return []
    levels = table.axis_values()[param]
    metric = table.metric
    index: dict[str, float] = {}
    for r in table.rows:
        if r.outcome is Outcome.COMPLETE and metric in r.valid:
            index[config_key(r.params)] = r.valid[metric]
    out = []
    for r in table.rows:
        v = r.params[param]
        if v not in levels or levels.index(v) + 1 >= len(levels) or config_key(r.params) not in index:
            continue
        nxt = levels[levels.index(v) + 1]
        k = config_key({**r.params, param: nxt})
        if k in index:
            out.append((v, nxt, index[k] - index[config_key(r.params)]))
    return out


def judge(table: TrialTable, action: Any) -> tuple[int, float | None]:
    """(pairs, share of pairs where `action`'s move helped, or hurt for an avoid rule)."""
    moves = move_outcomes(table, action.param)
    if not moves:
        return 0, None
    if action.direction is not None:
        good = [(d > 0) if action.direction == "up" else (d < 0) for _, _, d in moves if d != 0]
    else:  # set p=v: the pairs where v is one side; moving towards v should help
        good = [(d > 0) if hi == action.value else (d < 0) for lo, hi, d in moves
                if d != 0 and action.value in (lo, hi)]
    if not good:
        return 0, None
    share = sum(good) / len(good)
    return len(good), (1.0 - share) if action.avoid else share


def rule_accuracy(summaries: list[Any], table: TrialTable) -> list[RuleVerdict]:
    """Judge every rule of the given cognition summaries on `table`."""
    out = []
    for s in summaries:
        for r in s.rules:
            n, agree = judge(table, r.rule.action)
            out.append(RuleVerdict(source=s.dataset, rule=r.rule.action.describe(), evidence=r.evidence,
                                   origin=r.source, pairs=n, agree=agree))
    return out


def accuracy_line(verdicts: list[RuleVerdict]) -> str:
    """``held / judged (share)`` over the judged rules, e.g. ``5/8 (62%)``."""
    judged = [v for v in verdicts if v.holds is not None]
    if not judged:
        return "no rule could be judged"
    held = sum(1 for v in judged if v.holds)
    return f"{held}/{len(judged)} ({held / len(judged):.0%})"


def markdown(verdicts: list[RuleVerdict]) -> str:
    """A Markdown table of the verdicts."""
    lines = ["| source | rule | from | evidence (trials) | table pairs | share the rule's way | holds |",
             "|---|---|---|---|---|---|---|"]
    for v in verdicts:
        lines.append(f"| {v.source} | {v.rule} | {v.origin} | {v.evidence} | {v.pairs} | "
                     f"{'-' if v.agree is None else format(v.agree, '.0%')} | "
                     f"{'not judged' if v.holds is None else ('yes' if v.holds else 'no')} |")
    return "\n".join(lines) + "\n"
