"""Published-code switches: xavier init, random batches, Adam beta2 (release defaults unchanged)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from virtualmle.data import SequenceData
from virtualmle.models import ModelConfig, build_model
from virtualmle.training import TrainConfig
from virtualmle.training.batching import TrainBatches
from virtualmle.training.trainer import _make_optimizer, xavier_init


@torch.no_grad()
def test_xavier_init_matches_the_published_scales_and_keeps_padding_zero():
    torch.manual_seed(0)
    model = build_model("sasrec", ModelConfig(num_items=5000, hidden=64, blocks=2, max_len=50, tied=True))
    assert model.item_emb.weight[1:].std().item() == pytest.approx(0.02, rel=0.05)  # release init
    xavier_init(model)
    assert model.item_emb.weight[1:].std().item() == pytest.approx((2 / (5001 + 64)) ** 0.5, rel=0.05)
    assert model.pos_emb.weight.std().item() == pytest.approx((2 / (50 + 64)) ** 0.5, rel=0.1)
    assert model.item_emb.weight[0].abs().sum().item() == 0.0
    linear = model.blocks[0].attn.qkv
    assert linear.bias.abs().sum().item() == 0.0
    assert linear.weight.std().item() == pytest.approx((2 / (64 + 192)) ** 0.5, rel=0.1)


def test_random_batch_order_mixes_lengths_bucketed_does_not():
    rng = np.random.default_rng(0)
    seqs = [np.arange(1, n + 1) for n in rng.integers(4, 40, size=400)]
    data = SequenceData(name="toy", sequences=seqs, num_items=40)
    spreads = {}
    for order in ("bucketed", "random"):
        batches = TrainBatches(data, window=50, batch_size=50, order=order)
        spreads[order] = []
        for items, _, _ in batches.epoch(np.random.default_rng(1)):
            lengths = (items != 0).sum(1)
            spreads[order].append(int(lengths.max() - lengths.min()))
    assert max(spreads["bucketed"]) <= 5 and min(spreads["random"]) >= 20
    with pytest.raises(ValueError, match="batch order must be bucketed or random"):
        TrainBatches(data, window=50, batch_size=50, order="sorted")


def test_adam_beta2_reaches_the_optimizer():
    model = torch.nn.Linear(2, 2)
    assert _make_optimizer(TrainConfig(), model).param_groups[0]["betas"] == (0.9, 0.98)
    assert _make_optimizer(TrainConfig(adam_beta2=0.999), model).param_groups[0]["betas"] == (0.9, 0.999)


def test_the_optimizer_is_fused_where_torch_has_it_and_foreach_where_not(monkeypatch):
    model = build_model("sasrec", ModelConfig(num_items=10, hidden=8, blocks=1))
    for name in ("adam", "adamw"):
        group = _make_optimizer(TrainConfig(optimizer=name), model).param_groups[0]
        assert group["fused"] is True and not group["foreach"]

    class NoFused(torch.optim.Adam):  # a torch (or device) without the fused kernel
        def __init__(self, params, *, fused=None, **kw):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be on a supported device")
            super().__init__(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", NoFused)
    group = _make_optimizer(TrainConfig(optimizer="adam", lr=0.01, weight_decay=0.1), model).param_groups[0]
    assert group["foreach"] is True and not group["fused"]
    assert (group["lr"], group["weight_decay"], group["betas"]) == (0.01, 0.1, (0.9, 0.98))


@torch.no_grad()
def test_visible_padding_keys_are_seen_yet_independent_of_batch_padding():
    items = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[0, 0, 0, 3, 4, 5]])
    torch.manual_seed(0)
    hidden = build_model("sasrec", ModelConfig(num_items=10, hidden=8, blocks=1, max_len=8)).eval()
    visible = build_model("sasrec", ModelConfig(num_items=10, hidden=8, blocks=1, max_len=8,
                                                mask_padding_keys=False)).eval()
    visible.load_state_dict(hidden.state_dict())
    # Padding keys take part: same weights, different states.
    assert not torch.allclose(visible.encode(items)[:, -1], hidden.encode(items)[:, -1], atol=1e-4)
    # Every sequence is padded to max_len inside, so training batches (padded to ~max_len) and
    # length-sorted evaluation batches (padded to their own longest) give the same state.
    out = visible.encode(padded)
    assert out.shape == (1, 6, 8)
    torch.testing.assert_close(out[:, -3:], visible.encode(items), rtol=1e-5, atol=1e-6)
    full = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5]])
    torch.testing.assert_close(visible.encode(full)[:, -1], visible.encode(items)[:, -1], rtol=1e-5, atol=1e-6)


def test_attention_output_dropout_switch():
    on = build_model("sasrec", ModelConfig(num_items=10, hidden=8, dropout=0.5))
    off = build_model("sasrec", ModelConfig(num_items=10, hidden=8, dropout=0.5, attn_out_dropout=False))
    assert on.blocks[0].attn_drop is on.blocks[0].drop
    assert isinstance(off.blocks[0].attn_drop, torch.nn.Identity)
    # The switch reaches the model through the trial configuration.
    from virtualmle.training.trainer import model_config

    cfg = TrainConfig(attn_out_dropout=False, mask_padding_keys=False)
    mc = model_config(cfg, 10)
    assert (mc.attn_out_dropout, mc.mask_padding_keys) == (False, False)


# --- the published block wiring and ReLU feed-forward (issue 11 section 2) ------------------


def _block_pair(layout: str, **kw) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A `layout` block and a standard pre-LN block holding the same weights (eval mode)."""
    torch.manual_seed(0)
    cfg = ModelConfig(num_items=10, hidden=8, heads=2, block_layout=layout, **kw)
    block = build_model("sasrec", cfg).blocks[0].eval()
    standard = build_model("sasrec", ModelConfig(num_items=10, hidden=8, heads=2, **kw)).blocks[0].eval()
    standard.load_state_dict(block.state_dict())
    return block, standard


@torch.no_grad()
@pytest.mark.parametrize("layout", ["pmixer", "pmixer_x"])
def test_published_layout_normalises_only_the_queries_and_feeds_the_ffn_a_normalised_stream(layout):
    from virtualmle.models.sasrec import SASRecBlock

    block, standard = _block_pair(layout)
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1)) * 3
    ctx = SASRecBlock.prepare(torch.ones(2, 5, dtype=torch.bool), None, ModelConfig(num_items=10, hidden=8))
    # The formula written out with the block's own modules: attention from q = LN1(x) to keys
    # and values of the raw x (checked against a plain softmax attention), residual q or x.
    q = block.ln1(x)
    w, b = block.attn.qkv.weight, block.attn.qkv.bias
    qh, kh, vh = (t.view(2, 5, 2, 4).transpose(1, 2) for t in (q @ w[:8].T + b[:8], x @ w[8:16].T + b[8:16],
                                                                    x @ w[16:].T + b[16:]))
    scores = (qh @ kh.transpose(-1, -2)) / 2.0  # sqrt(D / H) = 2
    scores = scores.masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf"))
    attn = block.attn.proj((scores.softmax(-1) @ vh).transpose(1, 2).reshape(2, 5, 8))
    h = block.ln2((q if layout == "pmixer" else x) + attn)
    expected = h + block.ffn(h)
    torch.testing.assert_close(block(x, ctx), expected, rtol=1e-5, atol=1e-5)
    # Same weights, other wiring: a different computation.
    assert not torch.allclose(standard(x, ctx), expected, atol=1e-3)


@torch.no_grad()
def test_the_two_published_layouts_differ_only_in_the_attention_residual():
    from virtualmle.models.sasrec import SASRecBlock

    pm, _ = _block_pair("pmixer")
    pmx, _ = _block_pair("pmixer_x")
    pmx.load_state_dict(pm.state_dict())
    x = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(2)) * 3
    ctx = SASRecBlock.prepare(torch.ones(1, 4, dtype=torch.bool), None, ModelConfig(num_items=10, hidden=8))
    assert not torch.allclose(pm(x, ctx), pmx(x, ctx), atol=1e-3)
    # With a zero attention output the residual is all that differs: LN2(LN1(x)) = LN2(x) only
    # when LN1 is the identity on x, which a generic x is not.
    for blk in (pm, pmx):
        blk.attn.proj.weight.zero_()
        blk.attn.proj.bias.zero_()
    h_x, h_q = pmx.ln2(x), pm.ln2(pm.ln1(x))
    torch.testing.assert_close(pmx(x, ctx), h_x + pmx.ffn(h_x))
    torch.testing.assert_close(pm(x, ctx), h_q + pm.ffn(h_q))


def test_published_layout_ends_in_a_layer_norm_and_keeps_padding_rows_zero_between_blocks():
    torch.manual_seed(0)
    model = build_model("sasrec", ModelConfig(num_items=10, hidden=8, blocks=2, block_layout="pmixer_x")).eval()
    assert isinstance(model.norm, torch.nn.LayerNorm)
    seen = []
    model.blocks[1].register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    model.encode(torch.tensor([[0, 0, 3, 4, 5]]))
    # The timeline mask: block 2 receives zero vectors at the padding positions.
    assert seen[0][0, :2].abs().sum().item() == 0.0 and seen[0][0, 2:].abs().sum().item() > 0


def test_relu_ffn_is_relu_and_differs_from_gelu_with_the_same_weights():
    torch.manual_seed(0)
    relu = build_model("sasrec", ModelConfig(num_items=10, hidden=8, ffn="relu")).blocks[0].ffn.eval()
    gelu = build_model("sasrec", ModelConfig(num_items=10, hidden=8)).blocks[0].ffn.eval()
    gelu.load_state_dict(relu.state_dict())  # same parameters: the switch adds none
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(relu(x), relu.proj(torch.relu(relu.fc(x))))
    assert not torch.allclose(relu(x), gelu(x), atol=1e-4)


@pytest.mark.parametrize("layout", ["pmixer", "pmixer_x"])
def test_published_layout_trains_forward_and_backward(layout):
    from virtualmle.training.trainer import model_config

    cfg = TrainConfig(hidden=8, blocks=2, block_layout=layout, ffn="relu", loss="softmax", dropout=0.5)
    torch.manual_seed(0)
    model = build_model("sasrec", model_config(cfg, 20)).train()
    items = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    targets = torch.tensor([[0, 0, 4, 5, 6, 7], [2, 3, 4, 5, 6, 7]])
    states = model.encode(items)  # (2, 6, 8)
    assert states.shape == (2, 6, 8)
    keep = targets != 0
    logits = model.score_all(states[keep])  # (M, 21)
    assert logits.shape == (int(keep.sum()), 21)
    torch.nn.functional.cross_entropy(logits, targets[keep]).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(torch.isfinite(g).all() for g in grads.values())
    # Every part of the wiring learns: both LayerNorms, the fused attention input, the ReLU MLP.
    for name in ("blocks.0.ln1.weight", "blocks.0.ln2.weight", "blocks.1.attn.qkv.weight", "blocks.1.ffn.fc.weight",
                 "norm.weight"):
        assert grads[name].abs().sum().item() > 0, name


@torch.no_grad()
def test_xavier_ffn_default_leaves_the_feed_forward_at_torch_init_and_the_rest_xavier():
    torch.manual_seed(0)
    model = build_model("sasrec", ModelConfig(num_items=5000, hidden=64, blocks=2, ffn="relu", tied=True))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    xavier_init(model, keep_ffn=True)
    after = model.state_dict()
    ffn = {k for k in before if ".ffn." in k}
    assert ffn == {f"blocks.{i}.ffn.{m}.{p}" for i in (0, 1) for m in ("fc", "proj") for p in ("weight", "bias")}
    assert all(torch.equal(before[k], after[k]) for k in ffn)
    # torch's Linear default, the same as a kernel-1 Conv1d's: std 1 / sqrt(3 fan_in), non-zero biases.
    assert after["blocks.0.ffn.fc.weight"].std().item() == pytest.approx((1 / (3 * 64)) ** 0.5, rel=0.1)
    assert after["blocks.0.ffn.fc.bias"].abs().sum().item() > 0
    assert after["blocks.0.attn.qkv.bias"].abs().sum().item() == 0.0
    assert after["item_emb.weight"][1:].std().item() == pytest.approx((2 / (5001 + 64)) ** 0.5, rel=0.05)
    # Plain xavier re-initialises the feed-forward too.
    xavier_init(model)
    assert model.blocks[0].ffn.fc.bias.abs().sum().item() == 0.0
    assert TrainConfig(init="xavier_ffn_default").init == "xavier_ffn_default"
