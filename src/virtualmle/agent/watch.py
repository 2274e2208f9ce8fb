"""Watching a running trial's curve, as an engineer would: stop it when it cannot catch up.

`hopeless(curve, incumbent, ...)` reads the validation metric per epoch of a running trial and
the incumbent's (best completed trial's) curve. After `min_epochs` validations it projects the
trial optimistically (its best value so far plus its best recent gain per epoch, for every epoch
it has left, the horizon being the longer of the two runs) and stops it when even that projection
ends below the incumbent's best by more than `margin`. The reason is returned as a sentence with
the numbers, stored on the trial (``stop_reason``) and shown in the report.

Pure: no LLM, no storage; the agent calls it from its `watch` hook (`search.method.Method`).
"""

from __future__ import annotations


def hopeless(curve: list[float], incumbent: list[float], incumbent_best: float, *, horizon: int,
             metric: str = "ndcg@10", min_epochs: int = 2, margin: float = 0.05) -> str | None:
    """Why the trial with validation `curve` cannot reach the incumbent, or None to let it run.

    Args:
        curve: the running trial's validation metric per validation so far.
        incumbent: the incumbent's curve (same metric), for the same-epoch comparison.
        incumbent_best: the incumbent's best validation value (what the trial has to beat).
        horizon: validations the trial may still reach in total (its epoch cap).
        min_epochs: never judge before this many validations (the first epochs are noisy).
        margin: the projection must fall short of the incumbent by more than this fraction.
    """
    e = len(curve)
    if e < min_epochs or not incumbent or incumbent_best <= 0:
        return None
    best = max(curve)
    gains = [b - a for a, b in zip(curve[:-1], curve[1:])][-2:]
    rate = max(0.0, max(gains)) if gains else 0.0
    left = max(0, max(horizon, len(incumbent)) - e)
    projected = best + rate * left
    same_epoch = incumbent[min(e, len(incumbent)) - 1]
    if projected >= incumbent_best * (1.0 - margin) or curve[-1] >= same_epoch:
        return None
    return (f"epoch {e}: {metric} {curve[-1]:.4f} against the incumbent's {same_epoch:.4f} at the same epoch; "
            f"at its best recent rate (+{rate:.4f} per epoch) it would reach {projected:.4f} by epoch "
            f"{e + left}, below the incumbent's best {incumbent_best:.4f}")
