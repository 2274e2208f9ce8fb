"""The memory bank directory: long-term insights and cognition summaries on disk.

Layout (all JSON, each file carries `schema_version`)::

    <root>/bank.json                                  bank marker and schema version
    <root>/.lock                                      flock'ed around every read-modify-write
    <root>/insights/<dataset>__<model>.json            InsightSet (long-term memory)
    <root>/summaries/<dataset>__<model>__<study>.json  CognitionSummary (+ its trials for priors)

Writes are atomic (temp file + os.replace); read-modify-write cycles hold an exclusive
`fcntl.flock`, so two studies writing at once lose no update. File names come from slugified,
validated dataset / model / study names, never from LLM text.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from virtualmle.files import write_atomic
from virtualmle.memory.cognition import CognitionSummary
from virtualmle.memory.errors import MemoryBankError, SchemaVersionError
from virtualmle.memory.insights import (
    ApplyResult,
    InsightOp,
    InsightOps,
    InsightSet,
    now,
)
from virtualmle.memory.rules import descriptors
from virtualmle.memory.text import slugify

SCHEMA_VERSION = 2
ENV_DIR = "VIRTUALMLE_MEMORY_DIR"

# Descriptor -> weight in the transfer distance. Every descriptor is compared on a log scale, so
# a difference of 1 means a factor e; weights say how much each one matters for tuning.
DISTANCE_WEIGHTS: dict[str, float] = {
    "mean_seq_len": 2.0,
    "density": 1.0,
    "num_items": 1.0,
    "num_users": 0.5,
}
def default_memory_dir() -> Path:
    """`$VIRTUALMLE_MEMORY_DIR`, else `~/.virtualmle/memory`."""
    env = os.environ.get(ENV_DIR)
    return Path(env).expanduser() if env else Path.home() / ".virtualmle" / "memory"


def profile_distance(a: dict | None, b: dict | None) -> float:
    """Weighted RMS distance of log descriptors shared by both profiles (inf if none shared)."""
    da, db = descriptors(a), descriptors(b)
    num = den = 0.0
    for name, w in DISTANCE_WEIGHTS.items():
        if name in da and name in db and da[name] > 0 and db[name] > 0:
            num += w * (math.log(da[name]) - math.log(db[name])) ** 2
            den += w
    return math.sqrt(num / den) if den else math.inf


# ---- schema versions ---------------------------------------------------------------------------
def _migrate_0_to_1(doc: dict) -> dict:
    # Version 0: files written before versioning (no schema_version). Insight sets had no next_id.
    if doc.get("kind") == "insights" or "insights" in doc:
        doc.setdefault("kind", "insights")
        ids = [int(str(i.get("id", "ins-0")).split("-")[-1]) for i in doc.get("insights", [])
               if str(i.get("id", "")).startswith("ins-") and str(i.get("id")).split("-")[-1].isdigit()]
        doc.setdefault("next_id", max(ids, default=0) + 1)
    doc["schema_version"] = 1
    return doc


def _migrate_1_to_2(doc: dict) -> dict:
    # Version 2 (issue 12): insights may carry `combo` (moves made together, text-only evidence)
    # and summaries their start configuration, search order and evidence counts. Version-1
    # files have none of them and read as they are; the bump makes an older virtualmle refuse
    # a version-2 bank with "upgrade virtualmle" instead of failing on an unknown field.
    doc["schema_version"] = 2
    return doc


MIGRATIONS: dict[int, Callable[[dict], dict]] = {0: _migrate_0_to_1, 1: _migrate_1_to_2}


def load_doc(path: Path) -> dict:
    """Read one bank file, refusing newer schema versions and migrating older ones."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MemoryBankError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    except OSError as exc:
        raise MemoryBankError(f"{path}: cannot read ({exc.strerror})") from exc
    if not isinstance(doc, dict):
        raise MemoryBankError(f"{path}: expected a JSON object")
    version = doc.get("schema_version", 0)
    if not isinstance(version, int) or version < 0:
        raise MemoryBankError(f"{path}: bad schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path}: schema_version {version} is newer than this virtualmle supports "
            f"({SCHEMA_VERSION}); upgrade virtualmle to read this memory bank")
    while version < SCHEMA_VERSION:
        doc = MIGRATIONS[version](doc)
        version = doc["schema_version"]
    return doc


def _dump(kind: str, payload: dict) -> str:
    doc = {"schema_version": SCHEMA_VERSION, "kind": kind, **payload}
    return json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


class MemoryBank:
    """A memory bank directory (created on first write).

    Args:
        root: the directory; default `default_memory_dir()`.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_memory_dir()
        if self.root.exists() and not self.root.is_dir():
            raise MemoryBankError(f"memory bank {self.root} exists and is not a directory")
        marker = self.root / "bank.json"
        if marker.exists():
            load_doc(marker)  # refuses a bank written by a newer version early

    def __repr__(self) -> str:
        return f"MemoryBank({str(self.root)!r})"

    # ---- paths and locking -------------------------------------------------------------------
    def insights_path(self, dataset: str, model: str) -> Path:
        return self.root / "insights" / f"{slugify(dataset)}__{slugify(model)}.json"

    def summary_path(self, dataset: str, model: str, study: str) -> Path:
        return self.root / "summaries" / f"{slugify(dataset)}__{slugify(model)}__{slugify(study or 'manual')}.json"

    def _ensure(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MemoryBankError(f"cannot create memory bank {self.root} ({exc.strerror})") from exc
        marker = self.root / "bank.json"
        if not marker.exists():
            try:
                write_atomic(marker, _dump("bank", {"created": now()}))
            except OSError as exc:
                raise MemoryBankError(f"memory bank {self.root} is not writable ({exc.strerror})") from None

    def check_writable(self) -> None:
        """Create the bank and prove it writable now (before a study's first trial)."""
        self._ensure()
        try:
            for sub in ("insights", "summaries"):
                (self.root / sub).mkdir(exist_ok=True)
                fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=self.root / sub)
                os.close(fd)
                os.unlink(probe)
        except OSError as exc:
            raise MemoryBankError(f"memory bank {self.root} is not writable ({exc.strerror or exc})") from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the bank's exclusive lock (one read-modify-write at a time, across processes)."""
        self._ensure()
        with open(self.root / ".lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                self._clean_stale_temp()
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _clean_stale_temp(self) -> None:
        # Under the lock no other writer is between mkstemp and os.replace, so a temp file in
        # insights/ or summaries/ was left by a process killed mid-write.
        for sub in ("insights", "summaries"):
            d = self.root / sub
            for tmp in d.glob(".*.tmp") if d.is_dir() else ():
                with contextlib.suppress(OSError):
                    tmp.unlink()

    # ---- long-term insights ------------------------------------------------------------------
    def insights(self, dataset: str, model: str) -> InsightSet:
        """The insight set of dataset x model (empty when none is stored yet)."""
        path = self.insights_path(dataset, model)
        if not path.exists():
            return InsightSet(dataset=dataset, model=model)
        return self._read_insights(path)

    def _read_insights(self, path: Path) -> InsightSet:
        doc = load_doc(path)
        doc.pop("schema_version", None)
        doc.pop("kind", None)
        try:
            return InsightSet.model_validate(doc)
        except ValidationError as exc:
            raise MemoryBankError(f"{path}: invalid insight file: {_first_error(exc)}") from exc

    def save_insights(self, iset: InsightSet) -> Path:
        """Overwrite the stored insight set (under the lock)."""
        with self.locked():
            return self._write_insights(iset)

    def _write_insights(self, iset: InsightSet) -> Path:
        path = self.insights_path(iset.dataset, iset.model)
        write_atomic(path, _dump("insights", iset.model_dump(mode="json")))
        return path

    def update_insights(self, dataset: str, model: str, fn: Callable[[InsightSet], Any]) -> Any:
        """Read, let `fn` modify, write back, all under the lock; returns what `fn` returned."""
        with self.locked():
            iset = self.insights(dataset, model)
            out = fn(iset)
            self._write_insights(iset)
            return out

    def apply_ops(self, dataset: str, model: str, ops: Iterable[InsightOp] | InsightOps, *,
                  profile: dict | None = None, source: str = "llm", strict: bool = False) -> ApplyResult:
        """Apply insight operations to dataset x model atomically under the lock.

        Invalid operations (unknown id, ...) are returned in `result.rejected` and not applied;
        with `strict=True` an `InsightOpError` is raised and nothing is written.
        """
        ops = ops.ops if isinstance(ops, InsightOps) else list(ops)

        def _do(iset: InsightSet) -> ApplyResult:
            if profile:
                iset.profile = dict(profile)
            return iset.apply(ops, source=source, strict=strict)

        return self.update_insights(dataset, model, _do)

    def insight_sets(self) -> list[InsightSet]:
        """Every stored insight set, sorted by file name."""
        d = self.root / "insights"
        return [self._read_insights(p) for p in sorted(d.glob("*.json"))] if d.is_dir() else []

    # ---- cognition summaries -----------------------------------------------------------------
    def save_summary(self, summary: CognitionSummary) -> Path:
        """Store a summary (replacing the one of the same dataset x model x study)."""
        with self.locked():
            return self._write_summary(summary)

    def _write_summary(self, summary: CognitionSummary) -> Path:
        path = self.summary_path(summary.dataset, summary.model, summary.study)
        doc = summary.model_dump(mode="json", exclude={"distance"})
        # A study resumed with nothing new distils the same summary: the file (its `created`
        # included) stays as it was, so a committed bank does not change on every resume.
        text = _dump("summary", doc)
        with contextlib.suppress(MemoryBankError):
            old = load_doc(path) if path.is_file() else None
            if old is not None and {**old, "created": None} == {**json.loads(text), "created": None}:
                return path
        write_atomic(path, text)
        return path

    def summaries(self, model: str | None = None) -> list[CognitionSummary]:
        """Every stored summary (optionally of one backbone), newest first."""
        d = self.root / "summaries"
        out = []
        for p in sorted(d.glob("*.json")) if d.is_dir() else []:
            doc = load_doc(p)
            doc.pop("schema_version", None)
            doc.pop("kind", None)
            try:
                s = CognitionSummary.model_validate(doc)
            except ValidationError as exc:
                raise MemoryBankError(f"{p}: invalid summary file: {_first_error(exc)}") from exc
            if model is None or s.model.lower() == model.lower():
                out.append(s)
        return sorted(out, key=lambda s: s.created, reverse=True)

    def _latest_per_dataset(self, model: str | None) -> dict[str, CognitionSummary]:
        latest: dict[str, CognitionSummary] = {}
        for s in self.summaries(model):  # newest first: the first seen per dataset wins
            latest.setdefault(slugify(s.dataset), s)
        return latest

    def get_summaries(self, names: Iterable[str], model: str | None = None) -> list[CognitionSummary]:
        """The newest summary of each named dataset (in the order given); unknown names raise."""
        latest = self._latest_per_dataset(model)
        out = []
        for n in names:
            s = latest.get(slugify(n))
            if s is None:
                known = ", ".join(sorted(latest)) or "none"
                raise MemoryBankError(f"no cognition summary for dataset {n!r}"
                                      f"{f' and model {model!r}' if model else ''} in {self.root} (have: {known})")
            out.append(s)
        return out

    def similar(self, profile: dict, model: str | None, k: int = 3, *,
                exclude: Iterable[str] = ()) -> list[CognitionSummary]:
        """The newest summaries of the k datasets nearest to `profile` (same backbone), nearest first.

        Distance: `profile_distance` (weighted RMS of log descriptor differences). Each returned
        summary has `distance` set. Datasets named in `exclude` (e.g. the target) are skipped.
        """
        skip = {slugify(x) for x in exclude}
        cands = [s for slug, s in self._latest_per_dataset(model).items() if slug not in skip]
        for s in cands:
            s.distance = profile_distance(profile, s.profile)
        cands = [s for s in cands if math.isfinite(s.distance)]
        return sorted(cands, key=lambda s: (s.distance, s.dataset))[:k]

    def prior_trials(self, dataset: str, model: str | None = None) -> list[tuple[dict[str, Any], float]]:
        """Past trials of a dataset for a surrogate prior: (params, value normalised to [0, 1]
        within its study, 1 = best), from every stored summary of that dataset."""
        out: list[tuple[dict[str, Any], float]] = []
        for s in self.summaries(model):
            if slugify(s.dataset) == slugify(dataset):
                out += [(t.params, t.norm) for t in s.trials]
        return out


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    loc = ".".join(str(x) for x in e.get("loc", ()))
    return f"{loc}: {e.get('msg')}" if loc else str(e.get("msg"))
