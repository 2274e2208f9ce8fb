"""Search spaces as data: typed parameters, defaults, constraints and grid values, from YAML.

A space file looks like this (the shipped ones are ``spaces/sasrec.yaml`` and ``spaces/hstu.yaml``)::

    model: sasrec
    grid: [hidden, blocks, dropout, lr, weight_decay, batch_size]   # the Grid-729 axes
    fixed: {max_len: 50}                                            # held constant, not searched
    constraints:
      - divisible: [hidden, heads]                                  # hidden % heads == 0
    params:
      hidden: {type: categorical, choices: [16, 32, 64, 128, 256], default: 128, grid: [64, 128, 256]}
      lr:     {type: float, low: 1.0e-4, high: 1.0e-2, log: true, default: 3.0e-4, grid: [1.0e-4, 3.0e-4, 1.0e-3]}
      tied:   {type: bool, default: false, grid: [false, true]}

Parameter types: ``float`` and ``int`` (``low``, ``high``, optional ``log`` or ``step``),
``categorical`` (``choices``) and ``bool``. Every parameter has a ``default`` and an ordered list of
``grid`` values (three for the Grid-729 axes). Constraint kinds: ``divisible: [a, b]`` (a % b == 0)
and ``le: [a, b]`` (a <= b). Everything is checked on load; a problem raises `ConfigError` naming the
file and the parameter.

A configuration that breaks a constraint is never trained: grid points that break one are
dropped from the grid, a sampler draw that breaks one is recorded as an ``invalid`` trial that does
not use the budget and drawn again (so TPE sees only feasible trials), and an explicit proposal that
breaks one is recorded as ``invalid`` and counts against the budget (the method chose it).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from virtualmle.errors import ConfigError
from virtualmle.records import value_key

Value = Union[bool, int, float, str]


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def contains(self, value: Any) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError


class FloatParam(_Param):
    """A real-valued parameter on a linear or log scale."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None
    default: float
    grid: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log scale needs low > 0 (got {self.low})")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and self.low <= value <= self.high
        )

    def distribution(self) -> Any:
        import optuna

        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)


class IntParam(_Param):
    """An integer parameter on a linear or log scale."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = 1
    default: int
    grid: list[int] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log scale needs low > 0 (got {self.low})")
        if self.log and self.step != 1:
            raise ValueError("log and step cannot be combined")
        if (self.high - self.low) % self.step:
            raise ValueError(f"high - low must be a multiple of step ({self.step})")
        return self

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def distribution(self) -> Any:
        import optuna

        return optuna.distributions.IntDistribution(self.low, self.high, log=self.log, step=self.step)


class CategoricalParam(_Param):
    """One of a list of values (strings, numbers or booleans)."""

    type: Literal["categorical"]
    choices: list[Value] = Field(min_length=2)
    default: Value
    grid: list[Value] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> CategoricalParam:
        if len(set(map(value_key, self.choices))) != len(self.choices):
            raise ValueError("choices must be distinct")
        return self

    def contains(self, value: Any) -> bool:
        return any(value_key(value) == value_key(c) for c in self.choices)

    def distribution(self) -> Any:
        import optuna

        return optuna.distributions.CategoricalDistribution(list(self.choices))


class BoolParam(_Param):
    """A switch; stored in Optuna as a categorical over [False, True]."""

    type: Literal["bool"]
    default: bool
    grid: list[bool] = Field(min_length=1)

    def contains(self, value: Any) -> bool:
        return isinstance(value, bool)

    def distribution(self) -> Any:
        import optuna

        return optuna.distributions.CategoricalDistribution([False, True])


ParamSpec = Annotated[Union[FloatParam, IntParam, CategoricalParam, BoolParam], Field(discriminator="type")]

_CONSTRAINT_KINDS = {
    "divisible": ("must be divisible by", lambda a, b: b != 0 and a % b == 0),
    "le": ("must be <=", lambda a, b: a <= b),
}


class _SpaceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Literal["sasrec", "hstu"]
    description: str = ""
    grid: list[str] = Field(default_factory=list)
    fixed: dict[str, Value] = Field(default_factory=dict)
    constraints: list[dict[str, list[str]]] = Field(default_factory=list)
    params: dict[str, ParamSpec] = Field(min_length=1)




@dataclass(frozen=True)
class Constraint:
    """``kind`` between two parameters, e.g. divisible(hidden, heads)."""

    kind: str
    left: str
    right: str

    def holds(self, config: dict[str, Any]) -> bool:
        """True when satisfied, or when either side is absent from ``config``."""
        if self.left not in config or self.right not in config:
            return True
        return bool(_CONSTRAINT_KINDS[self.kind][1](config[self.left], config[self.right]))

    def describe(self, config: dict[str, Any]) -> str:
        verb = _CONSTRAINT_KINDS[self.kind][0]
        return f"{self.left} ({config.get(self.left)}) {verb} {self.right} ({config.get(self.right)})"


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space. Build it with `load_space`.

    Attributes:
        model: backbone the space is for.
        params: parameter name -> spec (`FloatParam`, `IntParam`, `CategoricalParam`, `BoolParam`).
        grid_names: the parameters the grid varies (the others stay at their defaults).
        fixed: parameters held constant in every trial (not searched, not stored as Optuna params).
        constraints: relations every trained configuration satisfies.
        source: where it was read from.
    """

    model: str
    params: dict[str, Any]
    grid_names: tuple[str, ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    constraints: tuple[Constraint, ...] = ()
    source: str = ""
    description: str = ""

    def defaults(self) -> dict[str, Any]:
        """Every searched parameter at its default (fixed ones not included)."""
        return {name: p.default for name, p in self.params.items()}

    def distributions(self) -> dict[str, Any]:
        """Optuna distributions of the searched parameters, in file order."""
        return {name: p.distribution() for name, p in self.params.items()}

    def violations(self, config: dict[str, Any]) -> list[str]:
        """Human-readable descriptions of the constraints ``config`` (plus fixed) breaks."""
        full = {**self.fixed, **config}
        return [c.describe(full) for c in self.constraints if not c.holds(full)]

    def grid_points(self) -> list[dict[str, Any]]:
        """The full grid in a fixed (file) order: product of the grid axes, others at default.

        Points that break a constraint are dropped.
        """
        base = self.defaults()
        axes = [self.params[n].grid for n in self.grid_names]
        points = []
        for values in itertools.product(*axes):
            point = {**base, **dict(zip(self.grid_names, values))}
            if not self.violations(point):
                points.append(point)
        return points

    def grid_key(self, params: dict[str, Any]) -> tuple:
        """Identity of a configuration on the grid axes (floats rounded against noise)."""
        return tuple(value_key(params.get(n)) for n in self.grid_names)




# Shipped presets: `--space NAME` loads spaces/<model>_NAME.yaml (docs/search.md).
PRESETS: tuple[str, ...] = ("extended",)


def builtin_space_path(model: str, preset: str | None = None) -> Path:
    """Path of the shipped space file of a backbone (`preset`: e.g. "extended")."""
    name = model if preset is None else f"{model}_{preset}"
    return Path(str(resources.files("virtualmle.search").joinpath("spaces", f"{name}.yaml")))


def load_space(model: str | None = None, path: str | Path | None = None) -> SearchSpace:
    """Load the shipped space of ``model``, a shipped preset, or a user's space file at ``path``.

    ``path`` may name a preset (``"extended"``) instead of a file, unless a file of that name
    exists: the shipped ``spaces/<model>_extended.yaml``.

    Raises:
        ConfigError: unknown backbone, unreadable or invalid file (the message names the file and
            the problem), or a space for another backbone than ``model``.
    """
    if path is not None and str(path) in PRESETS and not Path(path).exists():
        if model not in ("sasrec", "hstu"):
            raise ConfigError(f"search space preset {str(path)!r} needs a backbone (sasrec or hstu), got {model!r}")
        path = builtin_space_path(model, str(path))
    if path is None:
        if model not in ("sasrec", "hstu"):
            raise ConfigError(f"unknown backbone {model!r}: use one of sasrec, hstu")
        path = builtin_space_path(model)
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"search space {path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"search space {path}:{where} not valid YAML ({getattr(exc, 'problem', exc)})") from None
    space = parse_space(raw, source=str(path))
    if model is not None and space.model != model:
        raise ConfigError(f"search space {path}: is for model {space.model!r}, not {model!r}")
    return space


def parse_space(raw: Any, source: str = "<space>") -> SearchSpace:
    """Validate a parsed YAML document into a `SearchSpace` (see the module docstring)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"search space {source}: expected a mapping with model and params")
    try:
        spec = _SpaceFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"] if not (isinstance(x, str) and x in {"float", "int", "categorical", "bool"}))
        raise ConfigError(f"search space {source}: {loc}: {err['msg']}") from None

    def fail(msg: str) -> ConfigError:
        return ConfigError(f"search space {source}: {msg}")

    known = _train_config_names()
    for name in list(spec.params) + list(spec.fixed):
        if known is not None and name not in known:
            raise fail(f"unknown parameter {name!r} (not a TrainConfig parameter)")
        if name in ("model",):
            raise fail("'model' is set at the top level, not as a parameter")
    overlap = set(spec.params) & set(spec.fixed)
    if overlap:
        raise fail(f"parameter {sorted(overlap)[0]!r} is both searched and fixed")
    params = dict(spec.params)
    for name, p in params.items():
        if not p.contains(p.default):
            raise fail(f"params.{name}: default {p.default!r} is outside the parameter's range")
        for v in p.grid:
            if not p.contains(v):
                raise fail(f"params.{name}: grid value {v!r} is outside the parameter's range")
        if len(set(map(value_key, p.grid))) != len(p.grid):
            raise fail(f"params.{name}: grid values must be distinct")
    for name in spec.grid:
        if name not in params:
            raise fail(f"grid: {name!r} is not a searched parameter")
    if len(set(spec.grid)) != len(spec.grid):
        raise fail("grid: a parameter is listed twice")
    constraints = []
    for i, c in enumerate(spec.constraints):
        if len(c) != 1:
            raise fail(f"constraints[{i}]: expected one of {sorted(_CONSTRAINT_KINDS)} with [a, b]")
        (kind, names), = c.items()
        if kind not in _CONSTRAINT_KINDS or len(names) != 2:
            raise fail(f"constraints[{i}]: expected one of {sorted(_CONSTRAINT_KINDS)} with [a, b]")
        for n in names:
            if n not in params and n not in spec.fixed:
                raise fail(f"constraints[{i}]: {n!r} is not a parameter of the space")
        constraints.append(Constraint(kind, names[0], names[1]))
    space = SearchSpace(
        model=spec.model,
        params=params,
        grid_names=tuple(spec.grid),
        fixed=dict(spec.fixed),
        constraints=tuple(constraints),
        source=source,
        description=spec.description,
    )
    bad = space.violations(space.defaults())
    if bad:
        raise fail(f"the defaults break a constraint: {bad[0]}")
    if space.grid_names and not space.grid_points():
        raise fail("every grid point breaks a constraint")
    return space


def _train_config_names() -> set[str] | None:
    # The space may only name parameters TrainConfig knows; if training is not importable (a
    # partial checkout) the trial itself will reject unknown names.
    try:
        from virtualmle.training import TrainConfig
    except ImportError:
        try:
            from virtualmle.training.config import TrainConfig
        except ImportError:
            return None
    return set(TrainConfig.model_fields)
