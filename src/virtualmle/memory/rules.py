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

Comparator = Literal["<", "<=", ">", ">=", "==", "!=", "in"]  # "in": [lo, hi), bound is a pair
Scalar = bool | int | float | str

# Descriptor regimes used when code (not the LLM) writes a rule's condition: a rule learnt on
# one dataset is claimed for datasets in the same regime, not for every dataset.
# The cuts are coarse on purpose: the five Amazon sets (mean length 8-9, 7k-18k items) share a
# regime, a MovieLens-like set (long sequences, dense) does not.
REGIMES: dict[str, list[float]] = {
    "mean_seq_len": [20.0, 100.0],
    "num_items": [1_000.0, 100_000.0],
    "density": [1e-4, 1e-2],
}

# Parameters whose best value is about the run, not the data; never transferred.
NON_TRANSFERABLE = frozenset({"seed", "metric", "model", "max_epochs", "patience", "min_delta"})


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
    condition: dict[str, tuple[Comparator, float | tuple[float, float]]] = Field(default_factory=dict)
    backbone: str | None = None  # None: any backbone
    action: Action

    @field_validator("condition", mode="before")
    @classmethod
    def _clauses(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            raise ValueError("condition must be a mapping descriptor -> [comparator, number]")
        if len(v) > 8:
            raise ValueError("condition has more than 8 clauses")
        for k, clause in v.items():
            if not isinstance(k, str) or not k.replace("_", "").isalnum() or len(k) > 40:
                raise ValueError(f"bad descriptor name {k!r}")
            if not isinstance(clause, (list, tuple)) or len(clause) != 2:
                raise ValueError(f"condition on {k!r} must be [comparator, number] or ['in', [lo, hi]]")
            pair = isinstance(clause[1], (list, tuple))
            if (clause[0] == "in") != pair or (pair and len(clause[1]) != 2):
                raise ValueError(f"condition on {k!r}: 'in' takes a pair [lo, hi], other comparators a number")
        return v

    def matches(self, profile: dict | None, model: str | None = None) -> bool:
        """True if the backbone matches and every clause holds on `profile`.

        A clause on a descriptor the profile does not have counts as not holding (a rule is
        never applied on missing evidence).
        """
        if self.backbone and model and self.backbone.lower() != model.lower():
            return False
        desc = descriptors(profile)
        for name, (op, bound) in self.condition.items():
            x = desc.get(name)
            if x is None:
                return False
            if op == "in":
                lo, hi = bound  # type: ignore[misc]
                ok = lo <= x < hi
            else:
                ok = {"<": x < bound, "<=": x <= bound, ">": x > bound, ">=": x >= bound,
                      "==": x == bound, "!=": x != bound}[op]
            if not ok:
                return False
        return True

    def describe(self) -> str:
        cond = " and ".join(f"{k} in [{_num(b[0])}, {_num(b[1])})" if op == "in" else f"{k} {op} {_num(b)}"
                            for k, (op, b) in self.condition.items())
        where = f" [{self.backbone}]" if self.backbone else ""
        return f"{self.action.describe()}{where}" + (f" if {cond}" if cond else "")


def _num(x: float) -> str:
    return f"{x:g}"


# Canonical descriptor name -> where it may be found in a profile (`virtualmle.data.profile_dataset`
# nests some: "seq_len.mean"); flat aliases are accepted so hand-written profiles work too.
_ALIASES: dict[str, tuple[str, ...]] = {
    "mean_seq_len": ("mean_seq_len", "seq_len.mean", "mean_len", "avg_seq_len"),
    "median_seq_len": ("median_seq_len", "seq_len.p50"),
    "p90_seq_len": ("p90_seq_len", "seq_len.p90"),
    "num_items": ("num_items", "items", "n_items"),
    "num_users": ("num_users", "users", "n_users"),
    "num_interactions": ("num_interactions", "interactions", "n_interactions"),
    "density": ("density",),
    "popularity_gini": ("popularity_gini", "popularity.gini", "gini"),
    "test_only_share": ("test_only_share",),
}


def descriptors(profile: dict | None) -> dict[str, float]:
    """The numeric dataset descriptors rules and transfer use, under canonical (flat) names.

    Reads `virtualmle.data.profile_dataset` output (``users``, ``items``, ``seq_len.mean``,
    ``popularity.gini`` ...) or flat names; derives density and mean length when missing.
    """
    out: dict[str, float] = {}
    profile = profile or {}
    for canon, names in _ALIASES.items():
        for n in names:
            v: Any = profile
            for part in n.split("."):
                v = v.get(part) if isinstance(v, dict) else None
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[canon] = float(v)
                break
    if "density" not in out and {"num_interactions", "num_users", "num_items"} <= out.keys():
        if out["num_users"] > 0 and out["num_items"] > 0:
            out["density"] = out["num_interactions"] / (out["num_users"] * out["num_items"])
    if "mean_seq_len" not in out and {"num_interactions", "num_users"} <= out.keys() and out["num_users"] > 0:
        out["mean_seq_len"] = out["num_interactions"] / out["num_users"]
    return out


def regime_condition(profile: dict | None) -> dict[str, tuple]:
    """The condition code writes for a rule learnt on `profile`: the descriptor regime it is in.

    One clause per descriptor in `REGIMES` that the profile has, e.g. Beauty (mean length 8.9,
    12101 items, density 7e-4) -> ``{"mean_seq_len": ["<", 20], "num_items": ["in", [1000, 100000]],
    "density": ["in", [0.0001, 0.01]]}``. A rule learnt on one dataset is thus claimed for
    datasets in the same regime, not for every dataset.
    """
    cond: dict[str, tuple] = {}
    desc = descriptors(profile)
    for name, cuts in REGIMES.items():
        x = desc.get(name)
        if x is None:
            continue
        if x < cuts[0]:
            cond[name] = ("<", cuts[0])
        elif x >= cuts[-1]:
            cond[name] = (">=", cuts[-1])
        else:
            lo = max(c for c in cuts if c <= x)
            hi = min(c for c in cuts if c > x)
            cond[name] = ("in", (lo, hi))
    return cond


def clean_text(v: Any) -> str:
    """Validator helper: sanitised, length-bounded one-line text."""
    return sanitize_text(v)
