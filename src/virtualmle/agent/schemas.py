"""Pydantic schemas for everything the agent asks an LLM for.

Every LLM answer is parsed into one of these models (the LLM layer turns them into a JSON-schema
grammar for backends that support one, and validates the reply either way). The schemas are built
per study because the legal answers depend on the search space: a pick is one of the labels shown,
a parameter name is one of the space's names. That way even a weak model cannot invent a
parameter or pick a candidate that was not offered; values are still strings that code parses and
snaps, so an out-of-range value is caught by code, never trusted.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

# Free text is bounded so a rambling model cannot blow the token budget or the stored attrs:
# with a grammar, a small model tends to fill every string to its limit, and completion tokens
# are what a CPU spends its time on.
SHORT = 100
LONG = 160

VERDICTS = ("keep", "discard", "inconclusive")
# Same words as `virtualmle.memory.rules.Action.direction`, so a rule maps onto an Action as is.
DIRECTIONS = ("up", "down", "none")
INSIGHT_OPS = ("ADD", "UPVOTE", "DOWNVOTE", "EDIT", "REMOVE")


def candidate_labels(n: int) -> list[str]:
    """Labels for `n` shown candidates: A, B, C, ... (letters, not numbers, so a model that copies
    the first number it sees in the prompt does not accidentally pick by value)."""
    if not 1 <= n <= 26:
        raise ValueError(f"between 1 and 26 candidates can be shown, not {n}")
    return [chr(ord("A") + i) for i in range(n)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _limits(compact: bool) -> tuple[int, int, int]:
    """(hypothesis/attribution, mechanism/risk/rule, condition/direction) length limits.

    The compact limits are for small local models: their free text is weak anyway (FINDINGS) and
    every generated token is CPU time spent between trials.
    """
    return (48, 24, 16) if compact else (SHORT, 80, 40)


def pick_schema(n: int, compact: bool = False) -> type[BaseModel]:
    """The hybrid-mode answer: which of the `n` shown candidates to run, and why.

    Fields: hypothesis, mechanism, risk (free text, bounded; tighter when `compact`), choice (one
    of the labels). The reasoning fields come first so a model that writes left to right commits
    to a reason before a label.
    """
    labels = tuple(candidate_labels(n))
    long_, mid, _ = _limits(compact)
    return create_model(
        "CandidatePick",
        __base__=_Strict,
        hypothesis=(str, Field(max_length=long_, description="one testable hypothesis")),
        mechanism=(str, Field(max_length=mid, description="why the change should help")),
        risk=(str, Field(max_length=mid, description="the main way it could fail")),
        choice=(Literal[labels], Field(description="label of the candidate to run")),  # type: ignore[valid-type]
    )


def change_schema(param_names: list[str], max_changes: int = 2) -> type[BaseModel]:
    """The pure-LLM-mode answer: ONE change to the incumbent touching at most `max_changes`
    parameters. Names are constrained to the space; values are strings parsed and snapped by code.
    """
    names = tuple(param_names)
    change = create_model(
        "ParamChange",
        __base__=_Strict,
        name=(Literal[names], ...),  # type: ignore[valid-type]
        value=(str, Field(max_length=32)),
    )
    return create_model(
        "ChangeProposal",
        __base__=_Strict,
        hypothesis=(str, Field(max_length=SHORT)),
        mechanism=(str, Field(max_length=80)),
        risk=(str, Field(max_length=80)),
        changes=(list[change], Field(min_length=1, max_length=max_changes)),  # type: ignore[valid-type]
    )


def reflection_schema(param_names: list[str], max_ops: int = 1, compact: bool = False) -> type[BaseModel]:
    """The reflection after a trial: verdict, attribution, a generalised rule with its condition,
    the next direction, and up to `max_ops` edits to the long-term insights.

    The rule's parameter and direction are enums so a rule is machine-actionable (it can become a
    candidate on another dataset) even when its text is poor. The verdict is recorded only: the
    keep / discard decision is made in code from the validation metric. `compact` tightens the
    text limits (see `_limits`).
    """
    names = tuple(param_names) + ("none",)
    long_, mid, short = _limits(compact)
    rule = create_model(
        "RuleOut",
        __base__=_Strict,
        text=(str, Field(min_length=3, max_length=mid if compact else 80)),
        condition=(str, Field(max_length=short, description="when the rule applies")),
        param=(Literal[names], ...),  # type: ignore[valid-type]
        direction=(Literal[DIRECTIONS], ...),
    )
    op = create_model(
        "InsightOpOut",
        __base__=_Strict,
        op=(Literal[INSIGHT_OPS], ...),
        insight_id=(str, Field(max_length=8, description="existing insight id, '' for ADD")),
        text=(str, Field(max_length=mid if compact else 80)),
    )
    return create_model(
        "Reflection",
        __base__=_Strict,
        verdict=(Literal[VERDICTS], ...),
        attribution=(str, Field(max_length=long_)),
        rule=(rule, ...),
        next_direction=(str, Field(max_length=short)),
        insight_ops=(list[op], Field(default_factory=list, max_length=max_ops)),  # type: ignore[valid-type]
    )


def opro_schema(axes: list[Any]) -> type[BaseModel]:
    """OPRO's answer: a full configuration, one field per search-space parameter.

    Categorical and boolean parameters are enums of their legal values; numeric ones are plain
    numbers (OPRO proposes freely; code snaps to the space), so out-of-range values do happen and
    are handled by the snapping code.
    """
    fields: dict[str, Any] = {}
    for axis in axes:
        if axis.kind == "categorical":
            fields[axis.name] = (Literal[tuple(str(v) for v in axis.values)], ...)
        elif axis.kind == "bool":
            fields[axis.name] = (bool, ...)
        elif axis.kind == "int":
            fields[axis.name] = (int, ...)
        else:
            fields[axis.name] = (float, ...)
    return create_model("OproConfig", __base__=_Strict, **fields)
