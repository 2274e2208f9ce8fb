"""OPRO through the same search loop (`virtualmle search --method opro`, real embedded model,
real trials), and its snapping / fallback path on constructed replies."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from virtualmle.agent import OproMethod, ProposalRejected
from virtualmle.agent.space_view import random_config
from virtualmle.agent.schemas import opro_schema
from virtualmle.search.space import parse_space

DATA_DIR = os.environ.get("VIRTUALMLE_DATA_DIR", "")
SPACE = """\
model: sasrec
description: small opro test space
fixed: {max_len: 30, negatives: 32, batch_size: 256, patience: 1}
constraints:
  - divisible: [hidden, heads]
params:
  hidden:  {type: categorical, choices: [16, 18, 32], default: 32, grid: [16, 18, 32]}
  heads:   {type: categorical, choices: [1, 2, 4], default: 1, grid: [1, 2]}
  dropout: {type: float, low: 0.0, high: 0.5, default: 0.2, grid: [0.1, 0.2, 0.3]}
  lr:      {type: float, low: 1.0e-4, high: 1.0e-2, log: true, default: 1.0e-3, grid: [3.0e-4, 1.0e-3, 3.0e-3]}
  tied:    {type: bool, default: false, grid: [false, true]}
"""


@pytest.fixture()
def opro() -> OproMethod:
    return OproMethod(space=parse_space(yaml.safe_load(SPACE), source="opro.yaml"), seed=0)


def test_snap_clips_out_of_range_and_refuses_garbage(opro: OproMethod) -> None:
    cfg, clipped = opro.snap({"hidden": "18", "heads": "2", "dropout": 0.9, "lr": 1.0, "tied": "true"})
    assert cfg == {"hidden": 18, "heads": 2, "dropout": 0.5, "lr": 1e-2, "tied": True}
    assert sorted(clipped) == ["dropout", "lr"]
    with pytest.raises(ProposalRejected) as exc:
        opro.snap({"hidden": 32, "heads": 1, "dropout": "a lot", "lr": 1e-3, "tied": False})
    assert exc.value.reason == "garbage"
    with pytest.raises(ProposalRejected):
        opro.snap({"hidden": 32})  # a partial configuration is not a configuration
    # a constraint breach is caught by the view (18 % 4 != 0), so it never runs
    assert opro.view.violation({"hidden": 18, "heads": 4, "dropout": 0.2, "lr": 1e-3, "tied": False})


def test_schema_enumerates_categories(opro: OproMethod) -> None:
    schema = opro_schema(list(opro.view.axes.values())).model_json_schema()
    assert set(schema["properties"]) == {"hidden", "heads", "dropout", "lr", "tied"}
    assert schema["properties"]["tied"]["type"] == "boolean"
    cfg = random_config(opro.view, random.Random(1))
    assert cfg is not None and opro.view.violation(cfg) is None


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_DIR and (Path(DATA_DIR) / "Beauty.txt").exists()), reason="no Beauty.txt")
def test_search_method_opro_runs_through_the_loop(tmp_path: Path) -> None:
    (tmp_path / "opro.yaml").write_text(SPACE)
    env = {**os.environ, "VIRTUALMLE_DATA_DIR": DATA_DIR, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "virtualmle", "search", "--method", "opro", "--data", "beauty", "--trials", "2",
         "--slice-users", "800", "--max-epochs", "1", "--space", str(tmp_path / "opro.yaml"),
         "--storage", f"sqlite:///{tmp_path / 'o.db'}", "--study", "opro", "--run-dir", str(tmp_path / "run"),
         "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name="opro", storage=f"sqlite:///{tmp_path / 'o.db'}").trials
    assert len(trials) == 2 and trials[0].user_attrs["opro"]["source"] == "default"
    info = trials[1].user_attrs["opro"]
    assert info["source"] in ("llm", "random")
    if info["source"] == "random":
        assert info["fallback"]  # a replaced proposal always says why
    else:
        assert info["fallback"] is None and "raw" in info
    assert trials[1].params != trials[0].params
    assert "reflection" not in trials[1].user_attrs and "hypothesis" not in trials[1].user_attrs
    assert (tmp_path / "run" / "llm_log.jsonl").exists()
