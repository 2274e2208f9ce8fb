"""The evaluation mask: a leak-free default, the release rule kept for comparison, warnings."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from virtualmle.data import SequenceData, load_dataset, profile_dataset
from virtualmle.data.dataset import data_dir
from virtualmle.data.profile import repeated_target_shares
from virtualmle.models import ModelConfig, build_model
from virtualmle.training import TrainConfig, rank_targets, train
from virtualmle.training.evaluation import build_eval_batches, evaluate, resolve_eval_mask


class HistoryThenPopularity(nn.Module):
    """Scores the user's history items above everything else, then by popularity.

    It learns nothing about what comes next: under a sound protocol it cannot beat popularity.
    Behind the models' scoring interface (`encode`, `output_embeddings`, `score_all`), so it goes
    through the one `evaluate`. With `history_weight=0` it is the popularity scorer itself.
    """

    def __init__(self, data: SequenceData, history_weight: float = 1000.0) -> None:
        super().__init__()
        n = data.num_items + 1
        counts = np.zeros(n)
        for s in data.sequences:
            np.add.at(counts, s[:-2], 1.0)  # training part only
        counts[1:] += np.random.default_rng(0).random(n - 1) * 1e-3  # break count ties
        # Item i's vector: history_weight at column i, its popularity in the last column.
        table = torch.cat([torch.eye(n, dtype=torch.float64) * history_weight,
                           torch.tensor(counts)[:, None]], dim=1)  # (N + 1, N + 2)
        self.register_buffer("table", table)

    def encode(self, items: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        b, t = items.shape
        state = torch.zeros(b, self.table.size(0) + 1, dtype=torch.float64)
        state.scatter_(1, items, 1.0)  # multi-hot of the visible history
        state[:, 0] = 0.0  # padding
        state[:, -1] = 1.0  # picks up popularity
        return state[:, None, :].expand(b, t, -1)

    def output_embeddings(self) -> torch.Tensor:
        return self.table

    def score_all(self, states: torch.Tensor, table: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
        return torch.mm(states, table.T, out=out)


def _write_repeat_file(path: Path, users: int = 600, items: int = 300, seed: int = 0) -> Path:
    """Zipf-popular items, 15-25 per user; 10% of users end on items they already had.

    The 10% repeat their history for both the validation and the test target (far above the 1%
    threshold, so `auto` ranks all items), the other users never repeat.
    """
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, items + 1)
    p /= p.sum()
    lines = []
    for u in range(1, users + 1):
        seq = list(rng.choice(np.arange(1, items + 1), size=int(rng.integers(15, 26)), replace=False, p=p))
        if u % 10 == 0:
            seq[-2] = seq[int(rng.integers(0, len(seq) - 2))]
            seq[-1] = seq[int(rng.integers(0, len(seq) - 2))]
        lines.append(" ".join(map(str, [u, *seq])))
    path.write_text("\n".join(lines) + "\n")
    return path


def _ndcg(model: nn.Module, data: SequenceData, mask: str) -> float:
    return evaluate(model, build_eval_batches(data, "test", 50, mask=mask))["ndcg@10"]


def test_history_first_scorer_cannot_beat_popularity_under_the_default(tmp_path):
    data = load_dataset(str(_write_repeat_file(tmp_path / "repeats.txt")))
    valid_share, test_share = repeated_target_shares(data)
    assert valid_share == pytest.approx(0.1) and test_share == pytest.approx(0.1)
    default = resolve_eval_mask(TrainConfig().eval_mask, data)
    assert default == "none"
    history_first, popularity = HistoryThenPopularity(data), HistoryThenPopularity(data, history_weight=0.0)
    # The release's rule leaks: every repeated target is alone among the history, at rank 0.
    leaky = _ndcg(history_first, data, "history_except_target")
    assert leaky > _ndcg(popularity, data, "history_except_target") + 0.05
    # The default ranks the history too: putting it first only pushes the new targets down.
    assert _ndcg(history_first, data, default) < _ndcg(popularity, data, default)
    # `history` makes a repeated target a miss for every scorer, so no scorer gains from it.
    assert _ndcg(history_first, data, "history") == pytest.approx(_ndcg(popularity, data, "history"))


def test_history_mask_counts_a_repeated_target_as_a_miss():
    data = SequenceData(name="toy", sequences=[np.array([1, 2, 3, 2]), np.array([4, 5, 6, 7, 8])], num_items=8)
    scores = torch.zeros(2, 9)
    scores[0, 2] = scores[1, 8] = 5.0  # both targets score highest
    ranks = {}
    for mask in ("history", "history_except_target", "none"):
        (b,) = build_eval_batches(data, "test", 50, mask=mask)
        ranks[mask] = rank_targets(scores.clone(), b.targets, b.history_rows, b.history_items, b.missed).tolist()
    assert ranks["history"] == [8, 0]  # user 0's target 2 is in its history: the worst rank
    assert ranks["history_except_target"] == [0, 0]
    assert ranks["none"] == [0, 0]
    (none_batch,) = build_eval_batches(data, "test", 50, mask="none")
    assert none_batch.history_items.numel() == 0


def test_amazon_slice_metrics_are_identical_under_history_and_the_release_rule():
    if not (data_dir() / "Beauty.txt").is_file():
        pytest.skip("Beauty.txt not in VIRTUALMLE_DATA_DIR")
    data = load_dataset("beauty", slice_users=1000)
    assert repeated_target_shares(data) == (0.0, 0.0)
    assert resolve_eval_mask("auto", data) == "history"
    torch.manual_seed(0)
    model = build_model("sasrec", ModelConfig(num_items=data.num_items, hidden=16, blocks=1))
    for split in ("valid", "test"):
        got = {m: evaluate(model, build_eval_batches(data, split, 50, mask=m)) for m in ("history", "history_except_target", "none")}
        assert got["history"] == got["history_except_target"]
        assert got["history"] != got["none"]  # the mask does take part


def test_release_rule_warns_when_targets_repeat(tmp_path, caplog):
    data = load_dataset(str(_write_repeat_file(tmp_path / "repeats.txt", users=50)))
    with caplog.at_level(logging.WARNING, logger="virtualmle.training.evaluation"):
        assert resolve_eval_mask("history_except_target", data) == "history_except_target"
    assert "history_except_target" in caplog.text and "10.00% of test" in caplog.text


def test_result_records_the_resolved_mask_and_profile_the_repeat_shares(tmp_path):
    data = load_dataset(str(_write_repeat_file(tmp_path / "repeats.txt", users=120)))
    cfg = TrainConfig.for_model("sasrec", hidden=16, batch_size=64, max_epochs=1, negatives=20)
    doc = train(data, cfg).to_json()
    assert doc["eval_mask"] == "none" and doc["config"]["eval_mask"] == "auto"
    assert doc["profile"]["repeat_test_share"] == pytest.approx(0.1)
    doc = train(data, TrainConfig(**{**cfg.to_params(), "eval_mask": "history"})).to_json()
    assert doc["eval_mask"] == "history"


@pytest.mark.parametrize(
    ("sequences", "pattern"),
    [
        ([[1, 2, 3, 4, 5]], r"only 1 user"),
        ([[1, 2, 1, 2, 1, 2], [2, 1, 2, 1, 2, 1]], r"density 3\.00 > 1"),
    ],
)
def test_degenerate_files_get_a_warning(sequences, pattern, caplog):
    data = SequenceData(name="odd", sequences=[np.array(s) for s in sequences], num_items=max(map(max, sequences)))
    profile = profile_dataset(data)
    assert len(profile["warnings"]) == 1
    assert profile["warnings"][0].startswith("odd: ") and re.search(pattern, profile["warnings"][0])
    cfg = TrainConfig.for_model("sasrec", hidden=8, batch_size=8, max_epochs=1, negatives=2)
    with caplog.at_level(logging.WARNING, logger="virtualmle.training.trainer"):
        train(data, cfg)
    assert re.search(pattern, caplog.text)


def test_a_normal_file_has_no_warning():
    data = SequenceData(name="ok", sequences=[np.array([1, 2, 3, 4]), np.array([2, 3, 4, 5])], num_items=5)
    assert profile_dataset(data)["warnings"] == []
