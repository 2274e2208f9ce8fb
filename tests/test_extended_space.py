"""The `extended` space preset: the shipped space plus the issue-11 training parameters."""

from __future__ import annotations

import pytest

from virtualmle.errors import ConfigError
from virtualmle.search.space import load_space
from virtualmle.training import TrainConfig

NEW = {"max_epochs", "patience", "eval_every", "lr_schedule", "warmup_epochs", "neg_sampler", "logq",
       "gbce_t", "adam_beta2", "grad_clip", "init", "batch_order"}
# Issue 11 section 3: both backbones get pooling, position encodings and the score priors;
# only SASRec has a feed-forward to switch.
STRUCTURE = {"pos_enc", "pooling", "pool_k", "prior_transition", "prior_cooc", "prior_pop", "prior_recent_k",
             "prior_window", "prior_norm"}


@pytest.mark.parametrize("model", ["sasrec", "hstu"])
def test_extended_is_the_shipped_space_plus_the_new_parameters(model):
    shipped, extended = load_space(model), load_space(model, "extended")
    assert extended.model == model and extended.source.endswith(f"{model}_extended.yaml")
    assert NEW | STRUCTURE <= set(extended.params)
    sasrec_only = {"ffn", "ffn_mult", "block_layout"}
    assert sasrec_only & set(extended.params) == (sasrec_only if model == "sasrec" else set())
    for name, spec in shipped.params.items():
        if name == "loss":  # grows by gbce, keeps every shipped choice and the default
            assert set(spec.choices) < set(extended.params["loss"].choices)
            assert "gbce" in extended.params["loss"].choices and extended.params["loss"].default == spec.default
        elif name == "weight_decay" and model == "sasrec":  # grows by the full-CE recipe's 1e-8
            grown = extended.params[name]
            assert set(grown.choices) == set(spec.choices) | {1e-8} and grown.default == spec.default
            assert grown.grid == spec.grid
        else:
            assert extended.params[name] == spec, name
    assert extended.grid_names == shipped.grid_names and extended.fixed == shipped.fixed
    # Every default and grid point is a valid trial configuration.
    TrainConfig(model=model, **extended.fixed, **extended.defaults())
    points = extended.grid_points()
    assert len(points) == len(shipped.grid_points())
    for p in points[:50]:
        TrainConfig(model=model, **extended.fixed, **p)
    assert extended.defaults()["max_epochs"] == 200 and extended.defaults()["patience"] == 10


def test_preset_needs_a_backbone_and_a_file_of_that_name_wins(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"preset 'extended' needs a backbone"):
        load_space(None, "extended")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "extended").write_text("model: sasrec\nparams:\n  lr: {type: float, low: 0.001, high: 0.01, default: 0.001, grid: [0.001]}\n")
    assert set(load_space("sasrec", "extended").params) == {"lr"}



@pytest.mark.parametrize("model", ["sasrec", "hstu"])
def test_random_points_of_the_extended_space_are_valid_trial_configurations(model):
    import optuna

    space = load_space(model, "extended")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    dists = space.distributions()
    seen = set()
    for _ in range(200):
        trial = study.ask(dists)
        params = dict(trial.params)
        if space.violations(params):
            continue
        TrainConfig(model=model, **space.fixed, **params)  # raises on an invalid combination
        seen.add(params["pos_enc"])
    assert seen == set(space.params["pos_enc"].choices)


def test_the_recipes_that_reach_the_published_numbers_are_points_of_the_extended_space():
    # Issue 11 section 4: a configuration inside the shipped space reaches Beauty's published number
    # (full_ce: test NDCG@10 0.0597, Sports 0.0339; docs/full_fidelity.md), so a search can find it.
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from full_fidelity import RECIPES

    space = load_space("sasrec", "extended")
    point = TrainConfig.for_model("sasrec", **RECIPES["full_ce"]).to_params()
    outside = [n for n, spec in space.params.items() if not spec.contains(point[n])]
    assert outside == []
    assert space.violations(point) == []
    assert {n for n in RECIPES["full_ce"] if n not in space.params} <= {"precision"}  # all searched
