"""A small Gaussian-process surrogate that ranks candidate configurations.

Why a GP in numpy and not Optuna's samplers: the agent ranks a list of *given* candidates (one or
two changes of the incumbent, whole-space draws, TPE's suggestions) rather than sampling the
space, and needs a mean and an uncertainty per candidate to compute an acquisition value (expected
improvement) and combine it with the candidates' prior evidence. At tens of trials and a few
hundred candidates an exact GP costs about a millisecond.

Encoding: every grid step of an ordered parameter is the same distance (`STEP`), so "one change"
means the same thing for every parameter; categories are one-hot scaled to the same distance.
Targets are standardised per study. Prior trials from other datasets (transfer) are standardised
per source study and fitted by a second GP whose prediction, centred on the current study's
trials, is the current GP's prior mean: what transfers is the *shape* (which moves help), never
the absolute metric level of another dataset. Failed trials enter as the worst value seen minus
one standard deviation (AIDE's "worst metric"), so the surrogate steers away from them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from virtualmle.agent.space_view import Axis, SpaceView

STEP = 0.3  # encoded distance of one grid step
LENGTHSCALES = (0.25, 0.4, 0.6, 0.9, 1.4)
NOISES = (0.02, 0.1, 0.3)
# Per-parameter length-scale multipliers tried by the ARD step (automatic relevance
# determination): 20x makes a parameter nearly irrelevant to the prediction.
ARD_FACTORS = (0.5, 1.0, 2.0, 5.0, 20.0)
# Trials needed before per-parameter scales are fitted: with fewer, marginal likelihood can call
# a parameter irrelevant on the strength of one or two points.
ARD_MIN_TRIALS = 8
ARD_SWEEPS = 2
# Relative scale assumed for a study with too few trials to measure its spread.
FALLBACK_RELATIVE_SCALE = 0.05


def encode(space: SpaceView, params: dict[str, Any]) -> np.ndarray:
    """A configuration as a point in R^d (d = ordered axes + categories)."""
    out: list[float] = []
    for axis in space.axes.values():
        out.extend(_encode_axis(axis, params.get(axis.name)))
    return np.asarray(out, dtype=float)


def _encode_axis(axis: Axis, value: Any) -> list[float]:
    if axis.ordered:
        try:
            return [STEP * axis.rank(value)]
        except Exception:  # a value from another study's space that does not parse here
            return [STEP * (len(axis.values) - 1) / 2]
    one = [0.0] * len(axis.values)
    i = axis.index(value)
    if i is not None:
        one[i] = STEP / math.sqrt(2.0)
    return one


def axis_groups(space: SpaceView) -> list[slice]:
    """The encoded columns of each parameter (one for an ordered axis, one per category)."""
    out, i = [], 0
    for axis in space.axes.values():
        width = 1 if axis.ordered else len(axis.values)
        out.append(slice(i, i + width))
        i += width
    return out


def _kernel(a: np.ndarray, b: np.ndarray, ls: float | np.ndarray) -> np.ndarray:
    """Squared-exponential kernel; `ls` is one length scale or one per encoded column."""
    scale = np.broadcast_to(np.asarray(ls, dtype=float), (a.shape[1],))
    d2 = (((a[:, None, :] - b[None, :, :]) / scale) ** 2).sum(-1)
    return np.exp(-0.5 * d2)


def _lml(x: np.ndarray, y: np.ndarray, ls: float | np.ndarray, nz: float) -> tuple[float, Any] | None:
    """Log marginal likelihood (up to a constant) and (chol, alpha); None when not positive definite."""
    k = _kernel(x, x, ls) + (nz + 1e-8) * np.eye(len(x))
    try:
        chol = np.linalg.cholesky(k)
    except np.linalg.LinAlgError:
        return None
    alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, y))
    return -0.5 * float(y @ alpha) - float(np.log(np.diag(chol)).sum()), (chol, alpha)


@dataclass
class _GP:
    x: np.ndarray
    alpha: np.ndarray
    chol: np.ndarray
    ls: float | np.ndarray
    noise: float

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, noise_floor: float = 0.0,
            groups: Sequence[slice] | None = None) -> _GP:
        """Exact GP (unit signal variance) with length scale and noise chosen by marginal likelihood.

        With `groups` (the encoded columns of each parameter) and enough trials, a per-parameter
        length scale is then chosen by coordinate search over `ARD_FACTORS` (automatic relevance
        determination): a parameter whose changes did not move the metric gets a long scale, so
        moves that only touch it stop looking uncertain, and hence promising, to the acquisition.
        """
        best: tuple[float, float, float, Any] | None = None
        for ls in LENGTHSCALES:
            for nz in NOISES:
                nz = max(nz, noise_floor)
                r = _lml(x, y, ls, nz)
                if r is not None and (best is None or r[0] > best[0]):
                    best = (r[0], ls, nz, r[1])
        assert best is not None
        lml, ls0, nz, (chol, alpha) = best
        scales: float | np.ndarray = ls0
        if groups and len(groups) > 1 and len(x) >= ARD_MIN_TRIALS:
            factors = np.ones(len(groups))
            for _ in range(ARD_SWEEPS):
                changed = False
                for g in range(len(groups)):
                    for f in ARD_FACTORS:
                        if f == factors[g]:
                            continue
                        trial = factors.copy()
                        trial[g] = f
                        r = _lml(x, y, _expand(ls0, trial, groups, x.shape[1]), nz)
                        if r is not None and r[0] > lml + 1e-9:
                            lml, (chol, alpha), factors, changed = r[0], r[1], trial, True
                if not changed:
                    break
            scales = _expand(ls0, factors, groups, x.shape[1])
        return cls(x, alpha, chol, scales, nz)

    def predict(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ks = _kernel(xs, self.x, self.ls)
        mu = ks @ self.alpha
        v = np.linalg.solve(self.chol, ks.T)
        var = np.clip(1.0 - (v * v).sum(0), 1e-9, None)
        return mu, np.sqrt(var)


def _expand(ls0: float, factors: np.ndarray, groups: Sequence[slice], width: int) -> np.ndarray:
    out = np.full(width, ls0, dtype=float)
    for f, g in zip(factors, groups):
        out[g] = ls0 * f
    return out


@dataclass
class PriorTrial:
    """A trial of another study (transfer): its configuration, metric and which study it was."""

    params: dict[str, Any]
    value: float
    study: str


class Surrogate:
    """Fit on (config, value) pairs of this study (+ prior trials); predict standardised scores.

    `ard`: fit a length scale per parameter once there are `ARD_MIN_TRIALS` trials (see `_GP.fit`);
    the prior GP of transferred trials stays isotropic (other datasets' relevances may differ).

    `predict` returns (mu, sigma) in units of the study's standard deviation, relative to the
    study mean, so scores add up with the candidates' priors on a common scale.
    """

    def __init__(self, space: SpaceView, *, prior_weight: float = 1.0, ard: bool = True) -> None:
        self.space = space
        self.prior_weight = prior_weight
        self.ard = ard
        self._gp: _GP | None = None
        self._prior_gp: _GP | None = None
        self._prior_offset = 0.0
        self.n = 0
        self.mean = 0.0
        self.scale = 1.0
        self.best_z = 0.0

    def fit(self, configs: Sequence[dict[str, Any]], values: Sequence[float | None],
            prior: Sequence[PriorTrial] = ()) -> Surrogate:
        """`values[i]` None marks a failed trial."""
        self._fit_prior(prior)
        ok = [float(v) for v in values if v is not None and math.isfinite(v)]
        if not configs:
            self._gp = None
            self.n = 0
            return self
        if ok:
            self.mean = float(np.mean(ok))
            spread = float(np.std(ok)) if len(ok) >= 2 else 0.0
            self.scale = max(spread, FALLBACK_RELATIVE_SCALE * abs(self.mean), 1e-9)
            worst = (min(ok) - self.mean) / self.scale - 1.0
        else:
            self.mean, self.scale, worst = 0.0, 1.0, -1.0
        y = np.array([worst if v is None or not math.isfinite(v) else (float(v) - self.mean) / self.scale
                      for v in values])
        x = np.stack([encode(self.space, c) for c in configs])
        self.best_z = float(y.max())
        m0 = self._prior_mean(x)
        if self._prior_gp is not None:
            self._prior_offset = float(m0.mean())
        self._gp = _GP.fit(x, y - (m0 - self._prior_offset), groups=axis_groups(self.space) if self.ard else None)
        self.n = len(configs)
        return self

    def _fit_prior(self, prior: Sequence[PriorTrial]) -> None:
        self._prior_gp = None
        self._prior_offset = 0.0
        if not prior or self.prior_weight <= 0:
            return
        by_study: dict[str, list[PriorTrial]] = {}
        for t in prior:
            if t.value is not None and math.isfinite(t.value):
                by_study.setdefault(t.study, []).append(t)
        xs, ys = [], []
        for trials in by_study.values():
            if len(trials) < 3:  # too few to know which moves helped
                continue
            v = np.array([t.value for t in trials])
            sd = max(float(v.std()), FALLBACK_RELATIVE_SCALE * abs(float(v.mean())), 1e-9)
            for t, z in zip(trials, (v - v.mean()) / sd):
                xs.append(encode(self.space, t.params))
                ys.append(float(z))
        if len(xs) >= 3:
            # other datasets are weaker evidence: a noise floor keeps them from dominating
            self._prior_gp = _GP.fit(np.stack(xs), np.array(ys), noise_floor=0.3)

    def _prior_mean(self, x: np.ndarray) -> np.ndarray:
        if self._prior_gp is None:
            return np.zeros(len(x))
        mu, _ = self._prior_gp.predict(x)
        return self.prior_weight * mu

    def predict(self, configs: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) per config, standardised. Before any fit: prior mean only, sigma 1."""
        if not configs:
            return np.zeros(0), np.zeros(0)
        x = np.stack([encode(self.space, c) for c in configs])
        m0 = self._prior_mean(x) - self._prior_offset
        if self._gp is None:
            return m0, np.ones(len(configs))
        mu, sd = self._gp.predict(x)
        return mu + m0, sd


def expected_improvement(mu: np.ndarray, sigma: np.ndarray, best: float, xi: float = 0.0) -> np.ndarray:
    """EI of maximising, in the surrogate's standardised units: E[max(0, f - best - xi)]."""
    sd = np.maximum(sigma, 1e-9)
    z = (mu - best - xi) / sd
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return (mu - best - xi) * cdf + sd * pdf


def rank_candidates(candidates: list[Any], surrogate: Surrogate, *, kappa: float = 0.5,
                    rng: np.random.Generator | None = None, use_prior: bool = True,
                    acquisition: str = "ucb", prior_scale: float = 1.0) -> list[Any]:
    """Sort candidates best first by acquisition + prior (writes score / mu / sigma).

    ``acquisition="ucb"``: ``mu + kappa * sigma + prior``. ``acquisition="ei"``: expected
    improvement over the best standardised value seen, plus ``prior_scale * prior``: EI compares
    local moves (near the incumbent: high mean, low uncertainty) and global draws (far from the
    data: uncertain) on one scale, which is what lets a Bayesian-optimisation step leave the
    incumbent's neighbourhood when the data say the neighbourhood is exhausted.

    Exact ties (common early on, when every one-step move looks alike to the GP) are broken
    by a seeded random order rather than by generation order, so no parameter is favoured just
    for being listed first in the space.
    """
    if not candidates:
        return []
    mu, sd = surrogate.predict([c.config for c in candidates])
    if acquisition == "ei":
        base = expected_improvement(mu, sd, surrogate.best_z if surrogate.n else 0.0)
    else:
        base = mu + kappa * sd
    order = (rng or np.random.default_rng(0)).permutation(len(candidates))
    tie = np.empty(len(candidates))
    tie[order] = np.arange(len(candidates)) * 1e-9
    for c, m, s, b, t in zip(candidates, mu, sd, base, tie):
        c.mu, c.sigma = float(m), float(s)
        c.score = float(b + (prior_scale * c.prior if use_prior else 0.0) - t)
    return sorted(candidates, key=lambda c: c.score, reverse=True)
