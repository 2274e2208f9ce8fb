"""Fact check: LLM free text is kept only when it agrees with the code's facts about a trial.

The code knows what a trial changed (parameter, old -> new), whether that helped (the verdict,
against the noise estimate) and the curve's shape. A model's hypothesis, reflection or insight
text passes when it

- names a parameter the trial changed (by name or a common alias), and no other searched one;
- gives the verdict the code gave (reflections);
- if it states a direction for the parameter, states the one the facts support: the move made
  when it helped (or when a hypothesis predicts it will), the opposite when it hurt or failed.

Otherwise the text people read (and the bank stores) is written here from the facts, e.g.
``lr 3e-4 -> 1e-3: +0.0082 (14x noise); still rising at the last epoch: underfitting``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from virtualmle.memory.evidence import fmt_value

# Words people use for a parameter besides its name.
ALIASES = {
    "lr": ("learning rate", "learning-rate", "step size"),
    "hidden": ("hidden size", "hidden dim", "embedding size", "embedding dim", "dimension"),
    "blocks": ("layers", "layer", "depth", "block"),
    "heads": ("attention heads", "head"),
    "weight_decay": ("weight decay", "l2", "regularization", "regularisation"),
    "batch_size": ("batch size", "batch"),
    "dropout": ("drop-out", "drop out"),
    "max_len": ("sequence length", "max length", "maximum length"),
    "negatives": ("negative samples", "negative"),
}
_UP = r"\b(increas\w*|rais\w*|higher|larger|bigger|more|grow\w*|up)\b"
_DOWN = r"\b(decreas\w*|lower\w*|reduc\w*|smaller|less|fewer|shrink\w*|cut\w*|down)\b"


@dataclass(frozen=True)
class Facts:
    """What the code knows about one trial's change.

    Attributes:
        changed: parameter -> (old, new).
        outcome: "better", "worse", "within_noise", "failed", "first" (`Diagnostics.significance`)
            or "predicted" for a hypothesis (the move is expected to help).
        verdict: the code's keep / discard / inconclusive ("" for a hypothesis).
        names: every searched parameter (a text naming one the trial did not change fails).
    """

    changed: dict[str, tuple[Any, Any]]
    outcome: str
    verdict: str = ""
    names: tuple[str, ...] = ()


def _mentions(text: str, name: str) -> bool:
    words = (name, name.replace("_", " "), *ALIASES.get(name, ()))
    return any(re.search(rf"(?<![a-z0-9_]){re.escape(w)}(?![a-z0-9_])", text) for w in words)


def _direction(old: Any, new: Any) -> str | None:
    num = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (old, new))
    if not num or old == new:
        return None
    return "up" if new > old else "down"


def check(text: str, facts: Facts, *, verdict: str | None = None) -> str | None:
    """None when `text` agrees with `facts`; otherwise why it does not (one short line)."""
    t = " " + str(text or "").lower() + " "
    if verdict is not None and facts.verdict and verdict != facts.verdict:
        return f"verdict {verdict!r}, the code's is {facts.verdict!r}"
    named = [n for n in facts.changed if _mentions(t, n)]
    if not named:
        return f"names none of the changed parameters ({', '.join(sorted(facts.changed)) or 'none'})"
    others = [n for n in facts.names if n not in facts.changed and _mentions(t, n)]
    if others:
        return f"names {', '.join(others)}, which the trial did not change"
    up, down = bool(re.search(_UP, t)), bool(re.search(_DOWN, t))
    if up == down:
        return None  # no direction stated (or both): nothing to contradict
    said = "up" if up else "down"
    for n in named:
        moved = _direction(*facts.changed[n])
        if moved is None:
            continue
        if facts.outcome in ("better", "predicted"):
            expect = moved
        elif facts.outcome in ("worse", "failed"):
            expect = "down" if moved == "up" else "up"
        else:
            return f"states a direction ({said}) for {n}, but the change was within noise"
        if said != expect:
            return f"says {n} {said}; the trial supports {n} {expect}"
    return None


def code_text(diag: Any, evidence: Any = None) -> str:
    """The reflection people read when the model's fails the check, from the code's facts.

    Args:
        diag: the trial's `Diagnostics`.
        evidence: the study's pooled `MoveEvidence` for the trial's move, when there is one.
    """
    change = " with ".join(f"{k} {fmt_value(a)} -> {fmt_value(b)}" for k, (a, b) in diag.changed.items()) or "no change"
    if diag.failure:
        head = f"{change}: failed ({diag.failure})"
    elif diag.delta is None:
        head = f"{change}: first trial"
    else:
        x = abs(diag.delta) / diag.noise if diag.noise else float("inf")
        head = f"{change}: {diag.delta:+.4f} ({x:.1f}x noise)" if x < 10 else f"{change}: {diag.delta:+.4f} ({x:.0f}x noise)"
        if diag.significance == "within_noise":
            head += ", within noise"
    if evidence is not None and evidence.n > 1 and evidence.mean is not None:
        head += f"; pooled over {evidence.n} trials: {evidence.mean:+.4f} ({abs(evidence.z or 0):.0f}x noise)"
    tail = []
    if diag.underfitting:
        tail.append("still rising at the last epoch: underfitting")
    if diag.overfitting:
        tail.append(f"validation peaked at epoch {diag.peak_epoch} of {diag.epochs}: overfitting")
    return "; ".join([head, *tail])


def hypothesis_facts(changed: dict[str, Any], names: list[str]) -> Facts:
    """Facts for a hypothesis about a candidate: its moves are predicted to help."""
    return Facts(changed={k: (v[0], v[1]) for k, v in changed.items()}, outcome="predicted", names=tuple(names))


def trial_facts(diag: Any, names: list[str]) -> Facts:
    """Facts of a finished trial from its `Diagnostics`."""
    return Facts(changed={k: (v[0], v[1]) for k, v in diag.changed.items()}, outcome=diag.significance,
                 verdict=diag.code_verdict, names=tuple(names))
