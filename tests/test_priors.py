"""Train-split score priors: the tables, leak-freedom, the evaluation hook, the cache, and a
transition prior that finds deterministic next items."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from virtualmle.data import SequenceData, load_dataset
from virtualmle.models import build_model
from virtualmle.training import TrainConfig, train
from virtualmle.training import priors as priors_mod
from virtualmle.training.evaluation import build_eval_batches, evaluate
from virtualmle.training.priors import PriorTables, ScorePriors, compute_prior_tables, load_prior_tables
from virtualmle.training.trainer import model_config

# Per user: training split (seq[:-2]), then the validation and test targets 9 and 10. Only the
# targets ever follow item 3 / item 9, so any leak of a target into a prior shows up there.
HAND = [[1, 2, 3, 9, 10], [2, 3, 1, 9, 10], [1, 2, 4, 7, 8]]


def _data(seqs: list[list[int]], num_items: int = 10) -> SequenceData:
    return SequenceData("hand", [np.array(s, dtype=np.int64) for s in seqs], num_items)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("VIRTUALMLE_CACHE_DIR", str(root))
    return root


def test_tables_of_a_hand_written_dataset(cache_dir):
    t1 = load_prior_tables(_data(HAND), window=1)
    # Transitions in the training splits: 1->2 (x2), 2->3 (x2), 3->1, 2->4.
    assert t1.transition.row(1) == {2: 1.0}
    assert t1.transition.row(2) == pytest.approx({3: 2 / 3, 4: 1 / 3})
    assert t1.transition.row(3) == {1: 1.0}
    # Co-occurrence, window 1: neighbours either side.
    assert t1.cooc.row(1) == pytest.approx({2: 2 / 3, 3: 1 / 3})
    assert t1.cooc.row(2) == pytest.approx({1: 2 / 5, 3: 2 / 5, 4: 1 / 5})
    # Window 2 adds the pairs two apart: (1, 3), (2, 1), (1, 4).
    t2 = load_prior_tables(_data(HAND), window=2)
    assert t2.cooc.row(1) == pytest.approx({2: 3 / 6, 3: 2 / 6, 4: 1 / 6})
    # Popularity: 1 and 2 three times, 3 twice, 4 once, of 9 training interactions.
    expected = np.zeros(11, dtype=np.float32)
    expected[[1, 2, 3, 4]] = [3 / 9, 3 / 9, 2 / 9, 1 / 9]
    np.testing.assert_allclose(t1.popularity, expected, rtol=1e-6)


def test_validation_and_test_targets_never_contribute(cache_dir):
    tables = load_prior_tables(_data(HAND), window=3)
    # 3 -> 9 is a validation step and 9 -> 10 a test step: neither is a training transition.
    assert 9 not in tables.transition.row(3)
    assert tables.transition.row(9) == {} and tables.cooc.row(9) == {} and tables.cooc.row(10) == {}
    assert 9 not in tables.cooc.row(3) and 10 not in tables.cooc.row(1)
    assert tables.popularity[[7, 8, 9, 10]].tolist() == [0.0, 0.0, 0.0, 0.0]
    # So at test time (history ends with the validation target 9) the transition prior is silent,
    # and the test target 10 gets nothing from it.
    scorer = ScorePriors(tables, transition=1.0)
    scores = scorer(torch.zeros(1, 11), torch.tensor([[1, 2, 3, 9]]))
    torch.testing.assert_close(scores[0, 1:].exp(), torch.full((10,), 0.1))


def test_hook_adds_the_weighted_priors_to_the_softmax(cache_dir):
    tables = load_prior_tables(_data(HAND), window=1)
    logits = torch.randn(2, 11, generator=torch.Generator().manual_seed(0))
    items = torch.tensor([[0, 1, 2], [3, 1, 2]])  # recent items: {1, 2} and {3, 1, 2}; last: 2
    out = ScorePriors(tables, transition=0.5, cooc=2.0, pop=3.0, recent_k=3, norm="sqrt")(logits.clone(), items)
    expected = torch.softmax(torch.cat([torch.full((2, 1), -torch.inf), logits[:, 1:]], 1), 1)
    for row, recent in enumerate(([1, 2], [3, 1, 2])):
        for b in range(1, 11):
            cooc = sum(tables.cooc.row(a).get(b, 0.0) for a in recent) / np.sqrt(len(recent))
            expected[row, b] += 0.5 * tables.transition.row(2).get(b, 0.0) + 2.0 * cooc + 3.0 * tables.popularity[b]
    torch.testing.assert_close(out, expected.log())  # the log of the sum: same order, no underflow


def test_far_below_items_keep_the_model_order(cache_dir):
    # Logits 200 apart: their probabilities underflow to 0 in float32, so a plain sum would tie
    # every such item (and ties count in the target's favour). The log domain keeps the order.
    tables = load_prior_tables(_data(HAND), window=1)
    logits = torch.tensor([[0.0, 400.0, 0.0, -200.0, -100.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    out = ScorePriors(tables, transition=0.5)(logits, torch.tensor([[3, 4]]))  # row 4: empty
    assert out[0, 3] < out[0, 4] < out[0, 2] < out[0, 1]
    assert torch.isfinite(out[0, 1:]).all()


def test_weights_zero_give_exactly_the_model_ranking(cache_dir):
    data = load_dataset("beauty", slice_users=300)
    config = TrainConfig.for_model("sasrec", hidden=16)
    assert ScorePriors.from_config(data, config) is None  # the default: no hook at all
    torch.manual_seed(0)
    model = build_model("sasrec", model_config(config, data.num_items))
    batches = build_eval_batches(data, "valid", config.max_len)
    plain = evaluate(model, batches)
    # Softmax alone (every weight 0) keeps the model's order: same metrics.
    assert evaluate(model, batches, ScorePriors(load_prior_tables(data, 3))) == plain
    with_pop = evaluate(model, batches, ScorePriors(load_prior_tables(data, 3), pop=50.0))
    assert with_pop != plain  # and the hook does act when a weight is on


def test_cache_is_reused_and_follows_the_data(cache_dir, tmp_path, monkeypatch):
    calls = []
    real = priors_mod.compute_prior_tables
    monkeypatch.setattr(priors_mod, "compute_prior_tables", lambda *a: calls.append(a) or real(*a))
    path = tmp_path / "hand.txt"
    path.write_text("".join(f"{u} {' '.join(map(str, s))}\n" for u, s in enumerate(HAND, 1)))

    first = load_prior_tables(load_dataset(str(path)), window=2)
    again = load_prior_tables(load_dataset(str(path)), window=2)
    assert (first.cache, again.cache, len(calls)) == ("miss", "hit", 1)
    assert again.cooc.row(1) == first.cooc.row(1) and len(list(cache_dir.glob("priors-*.npz"))) == 1
    # Another window is another table.
    assert load_prior_tables(load_dataset(str(path)), window=1).cache == "miss"
    # Changed data (user 1 now goes 1 -> 4): a new entry with the new counts.
    path.write_text(path.read_text().replace("1 1 2 3 9 10", "1 1 4 3 9 10"))
    changed = load_prior_tables(load_dataset(str(path)), window=2)
    assert changed.cache == "miss" and changed.transition.row(1) == pytest.approx({2: 0.5, 4: 0.5})
    # A damaged entry is ignored and rebuilt, never trusted.
    for entry in cache_dir.glob("priors-*.npz"):
        entry.write_bytes(b"not an npz")
    rebuilt = load_prior_tables(load_dataset(str(path)), window=2)
    assert rebuilt.cache == "miss" and rebuilt.transition.row(1) == changed.transition.row(1)


def test_entry_of_another_dataset_is_not_trusted():
    tables = compute_prior_tables([np.array([1, 2, 3])], num_items=3, window=1)
    assert PriorTables.from_arrays(tables.to_arrays(), num_items=3, window=1) is not None
    assert PriorTables.from_arrays(tables.to_arrays(), num_items=5, window=1) is None
    assert PriorTables.from_arrays(tables.to_arrays(), num_items=3, window=2) is None


def test_transition_prior_beats_popularity_on_deterministic_transitions(cache_dir, tmp_path):
    # Every user walks i, i+1, i+2, ... through 40 items: the next item is always known from the
    # last one, while popularity is nearly flat.
    rng = np.random.default_rng(0)
    lines = []
    for u in range(1, 201):
        start, length = int(rng.integers(0, 40)), int(rng.integers(5, 9))
        lines.append(f"{u} " + " ".join(str((start + j) % 40 + 1) for j in range(length)))
    path = tmp_path / "walks.txt"
    path.write_text("\n".join(lines) + "\n")
    data = load_dataset(str(path))
    base = {"hidden": 8, "max_epochs": 1, "negatives": 16, "batch_size": 64}
    trans = train(data, TrainConfig.for_model("sasrec", **base, prior_transition=10.0))
    pop = train(data, TrainConfig.for_model("sasrec", **base, prior_pop=10.0))
    assert trans.valid["hr@5"] > 0.95 and trans.test["hr@5"] > 0.95
    assert pop.test["hr@5"] < 0.5
    assert trans.test["ndcg@10"] > pop.test["ndcg@10"] + 0.4
