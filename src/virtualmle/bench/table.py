"""Tabular benchmark: a CSV of real, already-trained trials, and an executor that replays it.

A table is every point of a grid trained once, for real (``virtualmle search --method grid``),
exported with ``benchmarks/build_table.py``. Replaying it lets search methods be compared over
many seeds in minutes: `TableExecutor` has the interface of
`virtualmle.search.executor.LocalExecutor`, so the one search loop (`run_search`), the Optuna
storage and the budget accounting are exactly those of a real search; only training is replaced
by a lookup of the stored validation / test metrics, epochs and seconds.

A proposal that is not a table point snaps to the nearest one: on the grid axes by normalised
distance (each axis scaled to [0, 1] over its table values, log-scaled when the values span a
factor of 10 or more, a categorical mismatch counts 1), and parameters the table holds constant
take the table's value. Every snap is counted (`Snap`), so a report can say how often a method
asked for something the table does not have.

File format (comment lines first, then a CSV with a header row)::

    # virtualmle trial table
    # dataset: beauty
    # backbone: sasrec
    # axes: hidden,blocks,dropout,lr,weight_decay,batch_size
    # constants: {"heads": 1, "optimizer": "adam", ...}     (JSON: held constant on every row)
    # fidelity: {"slice_users": 1000, "max_epochs": 3}      (JSON)
    # metric: ndcg@10
    # machine: ...
    # date: ...
    hidden,blocks,...,outcome,seconds,epochs,best_epoch,num_params,stopped,valid_hr@10,...,test_hr@10,...,curve,error
"""

from __future__ import annotations

import csv
import io
import json
import math
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from virtualmle.errors import DataError
from virtualmle.search.executor import TrialOutcome, TrialSpec
from virtualmle.records import Outcome, same_value, value_key

# Config keys that are not configuration choices: never compared against the table.
IGNORED_KEYS = frozenset({"seed", "model", "metric", "max_epochs"})
# Header keys every table must have.
REQUIRED_META = ("dataset", "backbone", "axes", "constants", "fidelity", "metric")
# Result columns besides the axes, the valid_* / test_* metrics and the curve.
BASE_COLUMNS = ("outcome", "seconds", "epochs", "best_epoch", "num_params", "stopped")


@dataclass(frozen=True)
class TableRow:
    """One trained configuration of the table.

    Attributes:
        params: the grid-axis values of this row.
        outcome: how the real trial ended.
        valid / test: metric name -> value of the selected epoch (empty unless complete).
        seconds: wall-clock seconds the real trial took (process start included).
        epochs: per-epoch logs (``epoch``, ``valid`` {metric: value}, ``seconds``).
        best_epoch, num_params, stopped: as stored by the real trial.
        error: ``Type: message`` of a failed real trial.
    """

    params: dict[str, Any]
    outcome: Outcome
    valid: dict[str, float]
    test: dict[str, float]
    seconds: float
    epochs: tuple[dict[str, Any], ...] = ()
    best_epoch: int | None = None
    num_params: int | None = None
    stopped: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Snap:
    """How a proposal was mapped onto the table.

    Attributes:
        snapped: the proposal was not a table point.
        distance: normalised distance on the grid axes between the proposal and the row.
        moved: parameter -> (asked, table value) for every parameter that changed.
        row: the table row that answered.
    """

    snapped: bool
    distance: float
    moved: dict[str, tuple[Any, Any]]
    row: TableRow


@dataclass
class _Axis:
    name: str
    values: list[Any]
    numeric: bool
    log: bool

    def position(self, value: Any) -> float | None:
        """Normalised position of ``value`` on this axis (None if not comparable)."""
        if not self.numeric or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if not math.isfinite(value):
            return None
        lo, hi = min(self.values), max(self.values)
        if self.log:
            if value <= 0:
                return -1.0  # below any positive table value: nearest is the smallest
            lo, hi, value = math.log(lo), math.log(hi), math.log(value)
        return 0.0 if hi == lo else (value - lo) / (hi - lo)


def _parse_value(text: str) -> Any:
    """A CSV cell back into the value the trial stored (int, float, bool, str)."""
    t = text.strip()
    if t in ("True", "true"):
        return True
    if t in ("False", "false"):
        return False
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t




class TrialTable:
    """A loaded table of real trials (see the module docstring for the file format).

    Attributes:
        path: the CSV file.
        meta: header key -> raw value.
        dataset, backbone, metric: what the trials were.
        axes: grid-axis names, in file order.
        constants: parameters held constant on every row.
        fidelity: ``slice_users``, ``max_epochs`` and any other fidelity controls.
        rows: every row, in file order.
    """

    def __init__(self, path: Path, meta: dict[str, str], rows: list[TableRow]) -> None:
        self.path = path
        self.meta = meta
        self.dataset = meta["dataset"]
        self.backbone = meta["backbone"]
        self.metric = meta["metric"]
        self.axes: list[str] = [a.strip() for a in meta["axes"].split(",") if a.strip()]
        self.constants: dict[str, Any] = json.loads(meta["constants"])
        self.fidelity: dict[str, Any] = json.loads(meta["fidelity"])
        self.rows = rows
        self._axes = []
        for name in self.axes:
            seen: dict[tuple[str, Any], Any] = {}
            for r in rows:  # keep each value as the trial stored it (64, not 64.0)
                seen.setdefault(value_key(r.params[name]), r.params[name])
            numeric = all(k == "num" for k, _ in seen)
            raw = sorted(seen.values()) if numeric else sorted(seen.values(), key=str)
            log = numeric and all(v > 0 for v in raw) and max(raw) / min(raw) >= 10
            self._axes.append(_Axis(name, raw, numeric, log))
        self._index = {self.key(r.params): r for r in rows}

    # -- loading ----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "TrialTable":
        """Read a table file.

        Raises:
            DataError: unreadable file, a missing header key, an unparseable line (the message
                names the file and line).
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DataError(f"trial table {path}: cannot read ({exc.strerror})") from None
        meta: dict[str, str] = {}
        lines = text.splitlines()
        first_data = 0
        for i, line in enumerate(lines):
            if line.startswith("#"):
                key, sep, value = line[1:].partition(":")
                if sep and key.strip():
                    meta[key.strip()] = value.strip()
                first_data = i + 1
                continue
            break
        for key in REQUIRED_META:
            if key not in meta:
                raise DataError(f"trial table {path}: header line '# {key}: ...' is missing")
        for key in ("constants", "fidelity"):
            try:
                if not isinstance(json.loads(meta[key]), dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                raise DataError(f"trial table {path}: header '{key}' is not a JSON object ({exc})") from None
        axes = [a.strip() for a in meta["axes"].split(",") if a.strip()]
        if not axes:
            raise DataError(f"trial table {path}: header 'axes' names no parameter")
        reader = csv.DictReader(io.StringIO("\n".join(lines[first_data:])))
        missing = [c for c in (*axes, *BASE_COLUMNS) if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"trial table {path}: line {first_data + 1}: column {missing[0]!r} is missing")
        rows: list[TableRow] = []
        for n, rec in enumerate(reader):
            line_no = first_data + 2 + n
            try:
                rows.append(_row_from_csv(rec, axes))
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"trial table {path}: line {line_no}: {exc}") from None
        if not rows:
            raise DataError(f"trial table {path}: no rows")
        return cls(path, meta, rows)

    # -- lookup -----------------------------------------------------------------------------
    def key(self, params: dict[str, Any]) -> tuple:
        """Identity of a configuration on the table's axes."""
        return tuple(value_key(params.get(a)) for a in self.axes)

    def lookup(self, config: dict[str, Any]) -> Snap:
        """The row answering ``config``: its own point, or the nearest one (a snap)."""
        moved: dict[str, tuple[Any, Any]] = {}
        for name, value in config.items():
            if name in IGNORED_KEYS or name in self.axes or name not in self.constants:
                continue
            if not same_value(value, self.constants[name]):
                moved[name] = (value, self.constants[name])
        row = self._index.get(self.key(config))
        distance = 0.0
        if row is None:
            row, distance = self._nearest(config)
            for name in self.axes:
                if not same_value(config.get(name), row.params[name]):
                    moved[name] = (config.get(name), row.params[name])
        return Snap(snapped=bool(moved), distance=distance, moved=moved, row=row)

    def _nearest(self, config: dict[str, Any]) -> tuple[TableRow, float]:
        target = []
        for ax in self._axes:
            target.append(ax.position(config.get(ax.name)))
        best, best_d = self.rows[0], math.inf
        for row in self.rows:  # 729 rows: a linear scan is microseconds
            d = 0.0
            for ax, t in zip(self._axes, target):
                v = row.params[ax.name]
                if t is None:
                    d += 0.0 if same_value(v, config.get(ax.name)) else 1.0
                else:
                    d += (ax.position(v) - t) ** 2
            if d < best_d:
                best, best_d = row, d
        return best, math.sqrt(best_d)

    @property
    def best(self) -> TableRow | None:
        """The row with the best validation metric."""
        done = [r for r in self.rows if r.outcome is Outcome.COMPLETE and self.metric in r.valid]
        return max(done, key=lambda r: r.valid[self.metric]) if done else None

    def axis_values(self) -> dict[str, list[Any]]:
        """Axis name -> the distinct values the table has, sorted."""
        return {ax.name: list(ax.values) for ax in self._axes}

    def space_yaml(self, defaults: dict[str, Any]) -> dict[str, Any]:
        """A search-space document over exactly the table: each axis a categorical of its
        values (default from ``defaults`` when it is a table value), constants fixed."""
        params = {}
        for ax in self._axes:
            default = defaults.get(ax.name)
            if not any(same_value(default, v) for v in ax.values):
                default = ax.values[len(ax.values) // 2]
            params[ax.name] = {"type": "categorical", "choices": list(ax.values), "default": default,
                               "grid": list(ax.values)}
        return {
            "model": self.backbone,
            "description": f"the points of trial table {self.path.name}",
            "grid": list(self.axes),
            "fixed": dict(self.constants),
            "params": params,
        }




def _row_from_csv(rec: dict[str, str], axes: list[str]) -> TableRow:
    params = {a: _parse_value(rec[a]) for a in axes}
    outcome = Outcome(rec["outcome"].strip())
    valid = {k[6:]: float(v) for k, v in rec.items() if k and k.startswith("valid_") and v not in ("", None)}
    test = {k[5:]: float(v) for k, v in rec.items() if k and k.startswith("test_") and v not in ("", None)}
    curve_raw = rec.get("curve") or "[]"
    curve = json.loads(curve_raw)
    if not isinstance(curve, list):
        raise ValueError("curve is not a JSON list")
    return TableRow(
        params=params, outcome=outcome, valid=valid, test=test, seconds=float(rec["seconds"]),
        epochs=tuple(curve),
        best_epoch=int(rec["best_epoch"]) if rec.get("best_epoch") not in ("", None) else None,
        num_params=int(rec["num_params"]) if rec.get("num_params") not in ("", None) else None,
        stopped=rec.get("stopped") or None, error=rec.get("error") or None,
    )


class TableExecutor:
    """Answers trials from a `TrialTable` instead of training (same interface as LocalExecutor).

    ``submit`` looks the configuration up (snapping when needed), calls ``on_epoch`` with the
    stored per-epoch validation logs (so pruning works as in a real search) and returns a
    finished future with the stored metrics, epochs and seconds. Nothing is trained; a table
    trial that failed for real fails again with the same outcome.

    Args:
        table: the table to replay.
        workers: reported to the loop (proposals per round); lookups are instant either way.

    Attributes:
        snaps: trial number -> `Snap`, for every trial submitted through this executor.
    """

    def __init__(self, table: TrialTable, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.table = table
        self.workers = workers
        self.snaps: dict[int, Snap] = {}
        self._lock = threading.Lock()
        self._cancelled = False

    def submit(self, spec: TrialSpec, on_epoch: Callable[[dict[str, Any]], bool] | None = None) -> Future[TrialOutcome]:
        """Answer ``spec`` from the table; the returned future is already resolved."""
        future: Future[TrialOutcome] = Future()
        future.set_result(self._answer(spec, on_epoch))
        return future

    def run(self, spec: TrialSpec, on_epoch: Callable[[dict[str, Any]], bool] | None = None) -> TrialOutcome:
        """Answer one trial."""
        return self.submit(spec, on_epoch).result()

    def cancel_all(self) -> None:
        """Nothing runs in the background; later submissions end ``interrupted``."""
        self._cancelled = True

    def shutdown(self) -> None:
        """Nothing to release."""

    def _answer(self, spec: TrialSpec, on_epoch: Callable[[dict[str, Any]], bool] | None) -> TrialOutcome:
        if self._cancelled:
            return TrialOutcome(number=spec.number, outcome=Outcome.INTERRUPTED, error="cancelled")
        snap = self.table.lookup(spec.config)
        with self._lock:
            self.snaps[spec.number] = snap
        row = snap.row
        out = TrialOutcome(number=spec.number, outcome=row.outcome, seconds=row.seconds,
                           timings={"table": str(self.table.path), "snapped": snap.snapped})
        metric = spec.config.get("metric", self.table.metric)
        epochs = [dict(e) for e in row.epochs]
        shown: list[dict[str, Any]] = []
        pruned = False
        for e in epochs:
            shown.append(e)
            if on_epoch is not None and on_epoch(e):
                pruned = len(shown) < len(epochs)
                break
        out.epochs = shown
        if row.outcome is not Outcome.COMPLETE:
            out.error = row.error or f"{row.outcome.value} in the real trial"
            return out
        if pruned:
            # Stopped early: the metrics of the best epoch so far, and that share of the seconds.
            # When the real run's best epoch was among those shown, the best so far is that epoch,
            # whose validation and test metrics the table holds; else only its validation value.
            share = len(shown) / max(1, len(epochs))
            out.outcome = Outcome.PRUNED
            out.seconds = row.seconds * share
            if row.best_epoch is not None and any(e.get("epoch") == row.best_epoch for e in shown):
                valid, test, best_epoch = dict(row.valid), dict(row.test), row.best_epoch
            else:
                vals = [(e.get("valid") or {}).get(metric) for e in shown]
                best = max((v for v in vals if isinstance(v, (int, float))), default=None)
                valid, test, best_epoch = ({metric: best} if best is not None else {}), {}, None
            out.result = {"valid": valid, "test": test, "epochs": shown, "best_epoch": best_epoch,
                          "num_params": row.num_params, "stopped": "pruned"}
            return out
        out.result = {"valid": dict(row.valid), "test": dict(row.test), "epochs": shown,
                      "best_epoch": row.best_epoch, "num_params": row.num_params,
                      "stopped": row.stopped or "max_epochs", "seconds": row.seconds}
        return out


__all__ = ["BASE_COLUMNS", "IGNORED_KEYS", "Snap", "TableExecutor", "TableRow", "TrialTable"]
