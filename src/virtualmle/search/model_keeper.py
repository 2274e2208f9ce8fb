"""Keep the best trials' models of a study in its run directory.

Each trial worker saves its model into ``<run_dir>/trials/NNNN/model`` (the driver never loads
weights). When a trial finishes, the driver calls `ModelKeeper.trial_finished` once:

- the best model of a completed trial, or of one the compute budget ended (its best epoch's
  weights: `stored.cut_by_budget`), by validation value (ties: the earlier trial, as the summary
  picks) is ``<run_dir>/best_model``, replaced only when a better trial completes, so a
  finished or interrupted study always has its best model on disk;
- with ``keep`` K > 1 the next K - 1 are kept in ``<run_dir>/models/trial-NNNN``;
- every other trial's model is deleted (failed and interrupted trials, and those a pruner, the
  method or a screen stopped, keep none).

Moves are renames within the run directory (cheap, and a model directory is never seen half
written). The state is the disk, so a resumed study continues where the last run left off. One
driver per run directory (the loop's design) is assumed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

BEST_DIR = "best_model"
MODELS_DIR = "models"


def trial_dir(run_dir: Path, number: int) -> Path:
    """Trial `number`'s directory: its spec, log, checkpoint, stop request and model."""
    return Path(run_dir) / "trials" / f"{number:04d}"


def trial_model_dir(run_dir: Path, number: int) -> Path:
    """Where trial `number`'s worker saves its model."""
    return trial_dir(run_dir, number) / "model"


class ModelKeeper:
    """Keeps ``best_model`` and the top-`keep` trial models of one run directory."""

    def __init__(self, run_dir: Path, keep: int = 1) -> None:
        self.run_dir = Path(run_dir)
        self.keep = keep
        self.best_dir = self.run_dir / BEST_DIR
        self.models_dir = self.run_dir / MODELS_DIR

    def _entry(self, path: Path) -> tuple[float, int, Path] | None:
        """(validation value, trial number, path) of a kept model; None if unreadable."""
        try:
            meta = json.loads((path / "model.json").read_text(encoding="utf-8"))
            metric = meta["config"]["metric"]
            return float(meta["metrics"]["valid"][metric]), int(meta["trial"]), path
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def kept(self) -> list[tuple[float, int, Path]]:
        """The kept models, best first."""
        paths = [self.best_dir] if self.best_dir.is_dir() else []
        if self.models_dir.is_dir():
            paths += sorted(p for p in self.models_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        entries = [e for e in (self._entry(p) for p in paths) if e is not None]
        return sorted(entries, key=lambda e: (-e[0], e[1]))

    def best(self) -> Path | None:
        """The best model's directory, if any trial has completed with one."""
        return self.best_dir if self.best_dir.is_dir() else None

    def trial_finished(self, number: int, value: float | None) -> None:
        """Take trial `number`'s model (value None: it did not complete) into the kept set."""
        src = trial_model_dir(self.run_dir, number)
        if not src.is_dir():
            return  # nothing saved (keep 0, an old worker, or a remote executor's filesystem)
        if value is None or not math.isfinite(value) or self.keep < 1:
            shutil.rmtree(src, ignore_errors=True)
            return
        self.models_dir.mkdir(exist_ok=True)
        new = self.models_dir / f"trial-{number:04d}"
        if new.exists():
            shutil.rmtree(new)
        os.replace(src, new)
        ranking = self.kept()
        top = ranking[: self.keep]
        best_value, best_number, best_path = top[0]
        if best_path != self.best_dir:
            # Old best out of the way first, then the new one in: two renames, no copy.
            old = self._entry(self.best_dir) if self.best_dir.is_dir() else None
            if old is not None:
                os.replace(self.best_dir, self.models_dir / f"trial-{old[1]:04d}")
            elif self.best_dir.exists():
                shutil.rmtree(self.best_dir)
            os.replace(best_path, self.best_dir)
            logger.info("trial %d is the best so far (%.6f): model in %s", best_number, best_value, self.best_dir)
        keep_numbers = {e[1] for e in top}
        for _, num, path in self.kept():
            if num not in keep_numbers:
                shutil.rmtree(path, ignore_errors=True)
