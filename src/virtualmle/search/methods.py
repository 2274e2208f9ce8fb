"""The classic search methods: grid, random, TPE and the default-config control.

- ``grid``: the space's grid (Grid-729 for the shipped spaces) in a seeded random order, skipping
  points already run in the study.
- ``random``: Optuna's `RandomSampler`.
- ``tpe``: Optuna's `TPESampler` (multivariate, seeded; constant liar when several workers run).
- ``default``: the default configuration again and again with a different training ``seed``: the
  control every comparison needs (how much of a "gain" is seed noise).

They are registered, with the agent and OPRO, in `virtualmle.methods` (``get_method``).
"""

from __future__ import annotations

import random
from typing import Any

import optuna

from virtualmle.errors import ConfigError
from virtualmle.search.method import Proposal, SearchContext, TrialRecord
from virtualmle.search.space import SearchSpace


class _ClassicMethod:
    """Shared parts: classic methods store nothing extra per trial."""

    name = "classic"

    def __init__(self, *, space: SearchSpace, seed: int = 0, **_: Any) -> None:
        self.space = space
        self.seed = seed

    def observe(self, ctx: SearchContext, record: TrialRecord) -> dict[str, Any]:
        return {}


class GridSearch(_ClassicMethod):
    """Every grid point once, in a random order fixed by the seed; skips points already run."""

    name = "grid"

    def __init__(self, *, space: SearchSpace, seed: int = 0, **options: Any) -> None:
        super().__init__(space=space, seed=seed)
        if not space.grid_names:
            raise ConfigError(f"search space {space.source}: has no grid (add a `grid:` list)")
        self.points = space.grid_points()
        random.Random(seed).shuffle(self.points)

    def propose(self, ctx: SearchContext) -> Proposal | None:
        taken = {self.space.grid_key(r.params) for r in ctx.history}
        taken |= {self.space.grid_key(p) for p in ctx.pending}
        for i, point in enumerate(self.points):
            if self.space.grid_key(point) not in taken:
                return Proposal(params=dict(point), user_attrs={"grid_index": i})
        return None  # the grid is exhausted


class RandomSearch(_ClassicMethod):
    """Independent uniform (or log-uniform) draws by Optuna's RandomSampler."""

    name = "random"

    def propose(self, ctx: SearchContext) -> Proposal:
        return Proposal(params=None)

    def make_sampler(self, seed: int, workers: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)


class TPESearch(_ClassicMethod):
    """Optuna's multivariate TPE; the constant liar keeps parallel workers from colliding."""

    name = "tpe"

    def propose(self, ctx: SearchContext) -> Proposal:
        return Proposal(params=None)

    def make_sampler(self, seed: int, workers: int) -> optuna.samplers.BaseSampler:
        import warnings

        with warnings.catch_warnings():  # multivariate is "experimental" only in name
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, constant_liar=workers > 1
            )


class DefaultControl(_ClassicMethod):
    """The default configuration, repeated with training seeds seed, seed+1, ..."""

    name = "default"

    def propose(self, ctx: SearchContext) -> Proposal:
        used = {r.params.get("seed") for r in ctx.history} | {p.get("seed") for p in ctx.pending}
        s = self.seed
        while s in used:
            s += 1
        return Proposal(params={**self.space.defaults(), "seed": s})
