"""The losses: chunked full softmax, sampled softmax with logQ and three samplers, gBCE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from virtualmle.models import ModelConfig, build_model
from virtualmle.training.losses import (
    LossContext,
    NegativeSampler,
    auto_chunk,
    bce_loss,
    gbce_beta,
    gbce_loss,
    sampled_softmax_loss,
    softmax_loss,
)

N = 50


def _model(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("sasrec", ModelConfig(num_items=N, hidden=16, blocks=1, **kw))


def _ctx(kind: str = "uniform", counts=None, **kw) -> LossContext:
    return LossContext(
        negatives=kw.pop("negatives", 8), gen=torch.Generator().manual_seed(0),
        sampler=NegativeSampler(kind, N, counts), **kw,
    )


@pytest.mark.parametrize("tied", [False, True])
def test_chunked_softmax_equals_whole_softmax_in_value_and_gradients(tied):
    model = _model(tied=tied, temperature=0.5)
    states = torch.randn(37, 16, requires_grad=True)
    positives = torch.randint(1, N + 1, (37,))
    results = []
    for chunk in (0, 5):  # 0: 37 * 50 elements is under the limit, so whole
        model.zero_grad()
        states.grad = None
        loss = softmax_loss(states, positives, model, _ctx(ce_chunk=chunk))
        loss.backward()
        results.append((loss.detach(), states.grad.clone(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (l0, g0, p0), (l1, g1, p1) = results
    reference = F.cross_entropy(states @ model.output_embeddings()[1:].T / 0.5, positives - 1)
    assert float(l0) == pytest.approx(float(reference.detach()), abs=1e-6)
    assert float(l1) == pytest.approx(float(l0), abs=1e-5)
    assert torch.allclose(g1, g0, atol=1e-5)
    assert len(p1) == len(p0) > 0 and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(p1, p0))


def test_bf16_softmax_is_bfloat16_arithmetic_close_to_float32():
    model = _model(tied=True)
    states = torch.randn(300, 16, requires_grad=True)
    positives = torch.randint(1, N + 1, (300,))
    out = {}
    for bf16 in (False, True):
        model.zero_grad()
        states.grad = None
        loss = softmax_loss(states, positives, model, _ctx(ce_chunk=64, bf16=bf16))
        loss.backward()
        out[bf16] = (loss.item(), states.grad.clone(), model.item_emb.weight.grad.clone())
    (l32, g32, e32), (l16, g16, e16) = out[False], out[True]
    assert l16 != l32  # the matmuls really ran in bfloat16
    assert l16 == pytest.approx(l32, rel=1e-2)
    for a, b in ((g16, g32), (e16, e32)):
        assert a.dtype == torch.float32
        assert float((a - b).norm() / b.norm()) < 0.02


def test_auto_chunk_keeps_small_logits_whole_and_bounds_large_ones():
    assert auto_chunk(100, 12_101) == 100  # 1.2M elements: whole
    rows = auto_chunk(25_600, 12_101)  # 512 users x 50 positions
    assert rows < 25_600 and rows * 12_101 <= 2**23
    assert auto_chunk(25_600, 12_101, ce_chunk=256) == 256


@torch.no_grad()
def test_logq_lowers_the_loss_when_negatives_are_popular():
    # Negatives drawn in proportion to popularity: the correction subtracts log q, which is
    # larger for popular negatives, so their logits drop and the positive's share rises.
    model = _model()
    counts = np.ones(N + 1)
    counts[1:6] = 1000.0  # five very popular items
    states = torch.randn(20, 16)
    positives = torch.full((20,), 40)  # an unpopular item
    plain = sampled_softmax_loss(states, positives, model, _ctx("popularity", counts, negatives=32))
    corrected = sampled_softmax_loss(states, positives, model, _ctx("popularity", counts, negatives=32, logq=True))
    assert float(corrected) < float(plain) - 0.5
    # Uniform q is a constant shift of every logit: no effect.
    uni = sampled_softmax_loss(states, positives, model, _ctx("uniform", negatives=32))
    uni_q = sampled_softmax_loss(states, positives, model, _ctx("uniform", negatives=32, logq=True))
    assert float(uni_q) == pytest.approx(float(uni), abs=1e-5)


@torch.no_grad()
def test_popularity_sampler_follows_counts_and_in_batch_uses_the_batch():
    counts = np.zeros(N + 1)
    counts[1], counts[2] = 900.0, 100.0  # others get the floor of 1
    sampler = NegativeSampler("popularity", N, counts)
    ids = sampler.sample(20_000, torch.Generator().manual_seed(0), torch.device("cpu"))
    share1 = float((ids == 1).float().mean())
    assert share1 == pytest.approx(900 / 1048, abs=0.02) and int((ids == 0).sum()) == 0
    # in_batch: the candidates are the batch's distinct positives; equal to a full softmax
    # restricted to those items.
    model = _model()
    states = torch.randn(6, 16)
    positives = torch.tensor([3, 7, 3, 9, 7, 11])
    got = sampled_softmax_loss(states, positives, model, _ctx("in_batch", counts))
    cand = torch.tensor([3, 7, 9, 11])
    ref = F.cross_entropy(states @ model.item_vectors(cand).T, torch.tensor([0, 1, 0, 2, 1, 3]))
    assert float(got) == pytest.approx(float(ref), abs=1e-6)
    with pytest.raises(ValueError, match="need per-item counts"):
        NegativeSampler("popularity", N)


@torch.no_grad()
def test_gbce_beta_and_its_limits():
    alpha = 8 / (N - 1)
    assert gbce_beta(8, N, 0.0) == pytest.approx(1.0)
    assert gbce_beta(8, N, 1.0) == pytest.approx(alpha)
    assert alpha < gbce_beta(8, N, 0.75) < 1.0
    # t = 0 is BCE over the same shared negatives; t > 0 down-weights the positive's term.
    model = _model()
    states = torch.randn(30, 16)
    positives = torch.randint(1, N + 1, (30,))
    g0 = gbce_loss(states, positives, model, _ctx(gbce_t=0.0))
    ctx = _ctx()
    neg = ctx.sampler.sample(ctx.negatives, ctx.gen, torch.device("cpu"))
    pos_l = (states * model.item_vectors(positives)).sum(-1, keepdim=True)
    neg_l = (states @ model.item_vectors(neg).T).masked_fill(neg[None] == positives[:, None], -math.inf)
    ref = torch.cat([F.softplus(-pos_l), F.softplus(neg_l)], dim=1).mean()
    assert float(g0) == pytest.approx(float(ref), abs=1e-6)
    g1 = gbce_loss(states, positives, model, _ctx(gbce_t=1.0))
    assert float(g1) < float(g0)


@torch.no_grad()
def test_bce_and_uniform_sampled_softmax_draw_the_release_negatives():
    # Same generator state, same negatives as the release's torch.randint calls.
    model = _model()
    states = torch.randn(10, 16)
    positives = torch.randint(1, N + 1, (10,))
    ctx = _ctx(negatives=5)
    got = sampled_softmax_loss(states, positives, model, ctx)
    gen = torch.Generator().manual_seed(0)
    neg = torch.randint(1, N + 1, (5,), generator=gen)
    logits = torch.cat([(states * model.item_vectors(positives)).sum(-1, keepdim=True),
                        (states @ model.item_vectors(neg).T).masked_fill(neg[None] == positives[:, None], -math.inf)], 1)
    assert float(got) == pytest.approx(float(F.cross_entropy(logits, torch.zeros(10, dtype=torch.long))), abs=1e-6)
    assert torch.isfinite(bce_loss(states, positives, model, _ctx(negatives=1)))


@pytest.mark.parametrize(
    "params",
    [
        {"loss": "gbce", "negatives": 64},
        {"loss": "sampled_softmax", "neg_sampler": "popularity", "logq": True, "negatives": 64},
        {"loss": "sampled_softmax", "neg_sampler": "in_batch", "logq": True},
        {"loss": "softmax", "ce_chunk": 100},
        {"loss": "softmax", "precision": "bf16"},
        {"loss": "sampled_softmax", "negatives": 64, "precision": "bf16"},
    ],
)
def test_new_losses_train_on_a_slice_of_beauty(params):
    from virtualmle.data import load_dataset
    from virtualmle.data.dataset import data_dir
    from virtualmle.training import TrainConfig, train

    if not (data_dir() / "Beauty.txt").is_file():
        pytest.skip("Beauty.txt not in VIRTUALMLE_DATA_DIR")
    data = load_dataset("beauty", slice_users=500)
    cfg = TrainConfig.for_model("sasrec", hidden=16, batch_size=64, lr=3e-3, max_epochs=2, **params)
    losses = [e.train_loss for e in train(data, cfg).epochs]
    assert losses[1] < losses[0], losses
