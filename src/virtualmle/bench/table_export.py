"""Building a trial table (`bench/table.py`) from a finished grid study.

`table_rows_from_study` turns a grid study's counted trials into CSV rows (one per grid point)
and the parameters held constant; `write_table` writes them, with the header comments that
`TrialTable.load` reads, atomically. `benchmarks/build_table.py` drives both.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from virtualmle.bench.table import BASE_COLUMNS, IGNORED_KEYS
from virtualmle.errors import ConfigError
from virtualmle.files import write_atomic
from virtualmle.records import value_key

__all__ = ["table_rows_from_study", "write_table"]


def table_rows_from_study(study: Any, axes: list[str], metric: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """CSV rows (one per distinct grid point, latest counted trial wins) and the constant params
    of a finished grid study, for `write_table`.

    Raises:
        ConfigError: a trial lacks one of the axes, or a non-axis parameter varies across trials.
    """
    from optuna.trial import TrialState

    by_key: dict[tuple, dict[str, Any]] = {}
    constants: dict[str, Any] | None = None
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        if not t.state.is_finished() or attrs.get("free") or attrs.get("outcome") == "interrupted":
            continue
        params = {**t.params, **attrs.get("extra_params", {})}
        missing = [a for a in axes if a not in params]
        if missing:
            raise ConfigError(f"trial {t.number} of study {study.study_name!r} has no parameter {missing[0]!r}")
        rest = {k: v for k, v in params.items() if k not in axes and k not in IGNORED_KEYS}
        if constants is None:
            constants = rest
        elif rest != constants:
            diff = sorted(k for k in set(rest) | set(constants) if rest.get(k) != constants.get(k))
            raise ConfigError(f"trial {t.number}: parameter {diff[0]!r} differs from the other trials; "
                              "a table needs one value of every non-axis parameter")
        outcome = attrs.get("outcome") or ("complete" if t.state == TrialState.COMPLETE else "failed")
        valid = attrs.get("valid") or {}
        test = attrs.get("test") or {}
        curve = [{"epoch": e.get("epoch"), "valid": {metric: (e.get("valid") or {}).get(metric)},
                  "seconds": round(float(e.get("seconds") or 0.0), 3)} for e in attrs.get("epochs") or []]
        row = {a: params[a] for a in axes}
        row.update(outcome=outcome, seconds=round(float(attrs.get("seconds") or 0.0), 3),
                   epochs=len(curve), best_epoch=attrs.get("best_epoch"), num_params=attrs.get("num_params"),
                   stopped=attrs.get("stopped"), error=(attrs.get("error") or "")[:200])
        for k, v in valid.items():
            row[f"valid_{k}"] = v
        for k, v in test.items():
            row[f"test_{k}"] = v
        row["curve"] = json.dumps(curve, separators=(",", ":"))
        by_key[tuple(value_key(params[a]) for a in axes)] = row
    return list(by_key.values()), constants or {}


def write_table(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """Write a table file atomically (header comments, then the CSV)."""

    metric_cols = sorted({k for r in rows for k in r if k.startswith(("valid_", "test_"))},
                         key=lambda k: (not k.startswith("valid_"), k))
    axes = [a.strip() for a in str(meta["axes"]).split(",")]
    columns = [*axes, *BASE_COLUMNS, *metric_cols, "curve", "error"]
    buf = io.StringIO()
    buf.write("# virtualmle trial table: every grid point trained once, for real\n")
    for key, value in meta.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        buf.write(f"# {key}: {text}\n")
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buf.getvalue())
