"""SASRec and HSTU: causality, left-padding invariance, shared interface, registry."""

from __future__ import annotations

import pytest
import torch

from virtualmle.errors import ConfigError
from virtualmle.models import BLOCKS, ModelConfig, build_model

NUM_ITEMS = 40


def _model(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(num_items=NUM_ITEMS, hidden=16, blocks=2, heads=2, max_len=12, **kw)
    return build_model(name, cfg).eval()


def _timestamps(b: int, t: int) -> torch.Tensor:
    # Increasing, irregular gaps (seconds), so the time-bias buckets differ between pairs.
    gaps = torch.randint(1, 10**6, (b, t), generator=torch.Generator().manual_seed(1))
    return gaps.cumsum(1)


CASES = [
    ("sasrec", {"norm_first": True}, False),
    ("sasrec", {"norm_first": False, "tied": True}, False),
    ("hstu", {"l2_norm": True, "tied": True}, False),
    ("hstu", {"l2_norm": True, "tied": True}, True),
]


@pytest.mark.parametrize(("name", "kw", "with_time"), CASES)
def test_changing_a_later_item_never_changes_earlier_outputs(name, kw, with_time):
    model = _model(name, **kw)
    items = torch.randint(1, NUM_ITEMS + 1, (3, 10), generator=torch.Generator().manual_seed(2))
    ts = _timestamps(3, 10) if with_time else None
    base = model.encode(items, ts)
    for j in (3, 7, 9):
        changed = items.clone()
        changed[:, j] = changed[:, j] % NUM_ITEMS + 1  # a different real item
        out = model.encode(changed, ts)
        torch.testing.assert_close(out[:, :j], base[:, :j], rtol=0, atol=1e-6)
        assert not torch.allclose(out[:, j], base[:, j]), "position j must see its own item"


@pytest.mark.parametrize(("name", "kw", "with_time"), CASES)
def test_left_padding_does_not_change_outputs(name, kw, with_time):
    model = _model(name, **kw)
    seq = torch.tensor([[5, 9, 1, 33, 7, 2]])
    ts = _timestamps(1, 6) if with_time else None
    short = model.encode(seq, ts)[:, -6:]
    padded_items = torch.cat([torch.zeros(1, 4, dtype=torch.long), seq], dim=1)
    padded_ts = None if ts is None else torch.cat([torch.zeros(1, 4, dtype=torch.long), ts], dim=1)
    padded = model.encode(padded_items, padded_ts)[:, -6:]
    torch.testing.assert_close(padded, short, rtol=1e-5, atol=1e-5)
    # The same sequence inside a batch with a longer neighbour gives the same user state.
    other = torch.randint(1, NUM_ITEMS + 1, (1, 10), generator=torch.Generator().manual_seed(3))
    batch = torch.cat([padded_items, other])
    batch_ts = None if ts is None else torch.cat([padded_ts, _timestamps(1, 10)])
    torch.testing.assert_close(model.encode(batch, batch_ts)[:1, -1], short[:, -1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["sasrec", "hstu"])
def test_shared_interface_shapes_and_l2_norm(name):
    model = _model(name, l2_norm=True)
    items = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4]])
    states = model.encode(items)
    assert states.shape == (2, 4, 16)
    valid = items != 0
    torch.testing.assert_close(states.norm(dim=-1)[valid], torch.ones(6), rtol=0, atol=1e-5)
    table = model.output_embeddings()
    assert table.shape == (NUM_ITEMS + 1, 16)
    scores = model.score_all(states[:, -1], table)
    assert scores.shape == (2, NUM_ITEMS + 1)
    torch.testing.assert_close(scores[:, 5], (states[:, -1] * model.item_vectors(torch.tensor(5))).sum(-1))


def test_tied_embeddings_share_the_input_table():
    tied, untied = _model("sasrec", tied=True), _model("sasrec", tied=False)
    assert tied.output_embeddings().data_ptr() == tied.item_emb.weight.data_ptr()
    assert untied.num_params() == tied.num_params() + (NUM_ITEMS + 1) * 16


def test_temperature_scales_logits():
    hot, cold = _model("hstu", temperature=1.0), _model("hstu", temperature=0.05)
    items = torch.tensor([[1, 2, 3]])
    s_hot = hot.score_all(hot.encode(items)[:, -1])
    s_cold = cold.score_all(cold.encode(items)[:, -1])
    torch.testing.assert_close(s_cold, s_hot / 0.05)


def test_registry_knows_both_backbones_and_rejects_others():
    assert set(BLOCKS) == {"sasrec", "hstu"}
    with pytest.raises(ConfigError, match="unknown model 'gru'"):
        build_model("gru", ModelConfig(num_items=5))
