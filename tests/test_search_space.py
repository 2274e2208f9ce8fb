"""Search spaces: the shipped YAML files, validation of user files, constraints, the grid."""

from __future__ import annotations

import pytest

from virtualmle.errors import ConfigError
from virtualmle.search.space import load_space, parse_space
from virtualmle.search.testing import TINY_SPACE_YAML, write_tiny_space
from virtualmle.training import TrainConfig

# REFERENCE.md section 1: the formal space of the release.
SASREC_PARAMS = {"hidden", "blocks", "heads", "dropout", "batch_size", "lr", "weight_decay", "optimizer",
                 "train_targets", "window", "loss", "negatives", "tied"}
HSTU_EXTRA = {"linear_dim", "attn_dim", "attn_dropout", "temperature"}


@pytest.mark.parametrize("model, expected", [("sasrec", SASREC_PARAMS), ("hstu", SASREC_PARAMS | HSTU_EXTRA)])
def test_shipped_spaces_cover_the_paper_space(model, expected):
    space = load_space(model)
    assert space.model == model
    assert expected <= set(space.params)
    # Defaults are the release's defaults, so the default trial is the plain default config.
    released = TrainConfig.for_model(model).to_params() if hasattr(TrainConfig, "for_model") else None
    for name, value in space.defaults().items():
        if released is not None:
            assert released[name] == value, name
    TrainConfig(model=model, **space.fixed, **space.defaults())


@pytest.mark.parametrize("model", ["sasrec", "hstu"])
def test_grid_729_is_six_axes_of_three(model):
    space = load_space(model)
    assert len(space.grid_names) == 6
    assert all(len(space.params[n].grid) == 3 for n in space.grid_names)
    points = space.grid_points()
    assert len(points) == 729
    assert len({space.grid_key(p) for p in points}) == 729
    # Off-grid parameters stay at their defaults.
    off = set(space.params) - set(space.grid_names)
    defaults = space.defaults()
    assert all(p[n] == defaults[n] for p in points for n in off)
    for p in points[:: 97]:
        TrainConfig(model=model, **space.fixed, **p)


def test_every_parameter_has_grid_values_inside_its_range():
    for model in ("sasrec", "hstu"):
        for name, p in load_space(model).params.items():
            assert 2 <= len(p.grid) <= 3, name
            assert all(p.contains(v) for v in p.grid), name
            assert p.contains(p.default), name


def test_constraint_filters_grid_and_reports_violations(tmp_path):
    space = load_space(path=write_tiny_space(tmp_path))
    assert space.violations({"hidden": 16, "heads": 3}) == ["hidden (16) must be divisible by heads (3)"]
    assert space.violations({"hidden": 24, "heads": 3}) == []
    assert len(space.grid_points()) == 6  # 3 hidden x 2 lr; heads stays at default 1


def test_distributions_are_optuna_distributions(tmp_path):
    import optuna

    space = load_space("sasrec")
    d = space.distributions()
    assert isinstance(d["lr"], optuna.distributions.FloatDistribution) and d["lr"].log
    assert isinstance(d["blocks"], optuna.distributions.IntDistribution)
    assert d["tied"].choices == (False, True)


def _bad(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_space(path=path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


@pytest.mark.parametrize(
    "edit, match",
    [
        (("hidden:    {type: categorical, choices: [16, 24, 32], default: 16,", "hidden:    {type: categorical, choices: [16, 24, 32], default: 48,"), "default 48 is outside"),
        (("grid: [1.0e-3, 1.0e-2]", "grid: [1.0e-3, 5.0e-2]"), "grid value 0.05 is outside"),
        (("negatives: {type: int", "negativez: {type: int"), "unknown parameter 'negativez'"),
        (("type: float", "type: complex"), "params.lr"),
        (("low: 1.0e-3, high: 1.0e-2, log: true", "low: 0.0, high: 1.0e-2, log: true"), "log scale needs low > 0"),
        (("divisible: [hidden, heads]", "divisible: [hidden, headz]"), "'headz' is not a parameter"),
        (("divisible: [hidden, heads]", "multiple: [hidden, heads]"), "constraints[0]"),
        (("grid: [hidden, lr]", "grid: [hidden, dropout]"), "'dropout' is not a searched parameter"),
        (("model: sasrec", "model: gru4rec"), "model"),
    ],
)
def test_invalid_space_files_raise_one_line_config_error(tmp_path, edit, match):
    old, new = edit
    assert old in TINY_SPACE_YAML
    msg = _bad(tmp_path, TINY_SPACE_YAML.replace(old, new, 1))
    assert match in msg


def test_not_yaml_and_missing_file(tmp_path):
    assert "line" in _bad(tmp_path, "model: sasrec\nparams: {hidden: [\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_space(path=tmp_path / "nope.yaml")


def test_defaults_must_satisfy_constraints(tmp_path):
    text = TINY_SPACE_YAML.replace("choices: [1, 2, 3], default: 1,", "choices: [1, 2, 3], default: 3,")
    assert "defaults break a constraint" in _bad(tmp_path, text)


def test_unknown_backbone_and_wrong_model():
    with pytest.raises(ConfigError, match="unknown backbone 'gru4rec'"):
        load_space("gru4rec")
    from virtualmle.search.space import builtin_space_path

    with pytest.raises(ConfigError, match="is for model 'hstu', not 'sasrec'"):
        load_space("sasrec", builtin_space_path("hstu"))


def test_parse_space_rejects_non_mapping():
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_space(["not", "a", "mapping"])
