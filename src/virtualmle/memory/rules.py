"""Machine-actionable rules: a condition on dataset descriptors and backbone, plus an action.

A rule is what makes memory useful without a strong LLM: the agent's candidate generator can
test `rule.matches(profile, model)` and apply `rule.action` to the incumbent in code.

Condition format (JSON / YAML): ``{"mean_seq_len": ["<", 12], "num_items": [">", 5000]}``;
every clause must hold. Action: ``{"param": "dropout", "direction": "down"}`` or
``{"param": "tied", "value": true}``; ``avoid: true`` flips it into "do not do this".
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from virtualmle.memory.text import sanitize_text

Comparator = Literal["<", "<=", ">", ">=", "==", "!="]
Scalar = bool | int | float | str

# Descriptor regimes used when code (not the LLM) writes a rule's condition: a rule learnt on
# one dataset is claimed for datasets in the same regime, not for every dataset.
REGIMES: dict[str, list[float]] = {
    "mean_seq_len": [20.0, 100.0],
    "num_items": [10_000.0, 100_000.0],
    "density": [1e-3, 1e-2],
}

# Parameters whose best value is about the run, not the data; never transferred.
NON_TRANSFERABLE = frozenset({"seed", "metric", "model", "max_epochs", "patience"})


class Action(BaseModel):
    """Change one parameter: in a direction (`up` / `down`) or to a value."""

    model_config = ConfigDict(extra="forbid")
    param: str = Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")
    direction: Literal["up", "down"] | None = None
    value: Scalar | None = None
    avoid: bool = False  # True: the change hurt; deprioritise it

    @model_validator(mode="after")
    def _one_of(self) -> Action:
        if (self.direction is None) == (self.value is None):
            raise ValueError("an action needs exactly one of 'direction' or 'value'")
        return self

    def key(self) -> tuple:
        """Identity of the action, for merging evidence (same parameter, same move)."""
        return (self.param, self.direction, None if self.value is None else repr(self.value), self.avoid)

    def describe(self) -> str:
        if self.direction is not None:
            verb = ("raising" if self.avoid else "raise") if self.direction == "up" else ("lowering" if self.avoid else "lower")
            return f"{'avoid ' if self.avoid else ''}{verb} {self.param}"
        return f"{'avoid setting' if self.avoid else 'set'} {self.param}={self.value!r}"


class Rule(BaseModel):
    """When `condition` holds on a dataset profile (and the backbone matches), do `action`."""

    model_config = ConfigDict(extra="forbid")
    condition: dict[str, tuple[Comparator, float]] = Field(default_factory=dict)
    backbone: str | None = None  # None: any backbone
    action: Action

    @field_validator("condition", mode="before")
    @classmethod
    def _clauses(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            raise ValueError("condition must be a mapping descriptor -> [comparator, number]")
        if len(v) > 8:
            raise ValueError("condition has more than 8 clauses")
        for k in v:
            if not isinstance(k, str) or not k.replace("_", "").isalnum() or len(k) > 40:
                raise ValueError(f"bad descriptor name {k!r}")
        return v

    def matches(self, profile: dict | None, model: str | None = None) -> bool:
        """True if the backbone matches and every clause holds on `profile`.

        A clause on a descriptor the profile does not have counts as not holding (a rule is
        never applied on missing evidence).
        """
        if self.backbone and model and self.backbone.lower() != model.lower():
            return False
        profile = profile or {}
        for name, (op, bound) in self.condition.items():
            x = profile.get(name)
            if not isinstance(x, (int, float)) or isinstance(x, bool) or math.isnan(float(x)):
                return False
            x = float(x)
            ok = {"<": x < bound, "<=": x <= bound, ">": x > bound, ">=": x >= bound,
                  "==": x == bound, "!=": x != bound}[op]
            if not ok:
                return False
        return True

    def describe(self) -> str:
        cond = " and ".join(f"{k} {op} {_num(b)}" for k, (op, b) in self.condition.items())
        where = f" [{self.backbone}]" if self.backbone else ""
        return f"{self.action.describe()}{where}" + (f" if {cond}" if cond else "")


def _num(x: float) -> str:
    return f"{x:g}"


def regime_condition(profile: dict | None) -> dict[str, tuple[str, float]]:
    """The condition code writes for a rule learnt on `profile`: the descriptor regime it is in.

    E.g. mean_seq_len 8.9 and num_items 12101 -> ``{"mean_seq_len": ["<", 20],
    "num_items": [">=", 10000], "num_items"...}``: a bucket per descriptor in `REGIMES`.
    Only the lower or upper bound that pins the bucket is written when the bucket is open-ended;
    for a middle bucket the lower bound is kept (one clause per descriptor).
    """
    cond: dict[str, tuple[str, float]] = {}
    for name, cuts in REGIMES.items():
        x = (profile or {}).get(name)
        if not isinstance(x, (int, float)) or isinstance(x, bool):
            continue
        below = [c for c in cuts if x < c]
        if len(below) == len(cuts):  # smallest bucket
            cond[name] = ("<", cuts[0])
        else:
            cond[name] = (">=", max(c for c in cuts if x >= c))
    return cond


def clean_text(v: Any) -> str:
    """Validator helper: sanitised, length-bounded one-line text."""
    return sanitize_text(v)
