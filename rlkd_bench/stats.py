"""Paired comparison of two arms scored on the same eval problems: the one place that says whether a
difference between arms is real (``rlkd-bench report --eval`` and the mini study use it).

Why paired: both arms answer the same problems, and problems differ far more in difficulty than
arms do. Comparing two unpaired intervals (do they overlap?) lets that problem-to-problem spread
hide any effect smaller than about two interval half-widths; differencing per problem removes it.

Why hierarchical: a figure depends on which problems were drawn *and* on the training/sampling
seed. Each bootstrap replicate draws each arm's seeds with replacement (independently per arm:
seed 1 of one arm and seed 1 of another are different trainings), averages each problem over the
drawn seeds, then draws the problems with replacement once and applies that same draw to both
arms. The statistic is the mean over problems of (arm A's problem mean - arm B's problem mean).

The p-value is a two-sided bootstrap test of "no difference": the replicates are centred on the
observed difference (so they show the difference's spread under the null) and
``p = (1 + #{|T* - T| >= |T|}) / (B + 1)``. The minimum detectable effect is
``(z_{1-alpha/2} + z_{power}) * SE`` with SE the replicates' sd: the true difference this design
would call real with probability ``power``.

With few seeds the seed level is resampled from few values (a bootstrap of n seeds shrinks their
variance by (n-1)/n): more seeds, not more problems, is what tightens a seed-noisy comparison.
A cell that is NaN means the problem was not scored for that seed; it is left out, never a 0.
Everything is seeded: the same inputs give the same interval and p-value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

ALPHA = 0.05
POWER = 0.8
LEVEL = 0.95
N_BOOT = 2000
TEST = "hierarchical paired bootstrap (seeds, then problems), two-sided, centred replicates"


@dataclass(frozen=True)
class PairedDiff:
    """A minus B on one metric: the figures of a differences table row."""

    diff: float  # mean over paired problems of (A's problem mean - B's problem mean)
    ci: tuple[float, float]  # percentile interval of the replicates
    p: float
    se: float
    mde: float  # at ``power``, two-sided ``alpha``
    n_problems: int  # problems scored in both arms (the pairs)
    n_seeds: tuple[int, int]
    n_unscored: tuple[int, int]  # (problem, seed) cells without a value, per arm
    n_boot: int
    level: float = LEVEL
    alpha: float = ALPHA
    power: float = POWER

    @property
    def supported(self) -> bool:
        """What the paired test supports: p below alpha and an interval that excludes 0."""
        return self.p < self.alpha and (self.ci[0] > 0 or self.ci[1] < 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(ci=list(self.ci), n_seeds=list(self.n_seeds), n_unscored=list(self.n_unscored),
                 supported=self.supported, test=TEST)
        return d


def mde(se: float, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable effect of a two-sided z-test with standard error ``se``."""
    z = NormalDist()
    return (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * se


def to_matrices(a: Sequence[Mapping[str, float]], b: Sequence[Mapping[str, float]]
                ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-seed ``{problem: value}`` of two arms as (seeds x problems) arrays over the same sorted
    problems; a problem a seed did not score is NaN. Arms that do not cover the same problems
    are refused: a paired test over different problems would compare the problems, not the arms."""
    if not a or not b:
        raise ValueError("each arm needs at least one seed")
    keys_a = {k for seed in a for k in seed}
    keys_b = {k for seed in b for k in seed}
    if keys_a != keys_b:
        only_a, only_b = sorted(keys_a - keys_b), sorted(keys_b - keys_a)
        raise ValueError(f"the arms are not scored on the same problems: {len(keys_a)} vs {len(keys_b)}, "
                         f"{len(keys_a & keys_b)} shared"
                         + (f"; only in A: {', '.join(only_a[:3])}" if only_a else "")
                         + (f"; only in B: {', '.join(only_b[:3])}" if only_b else ""))
    keys = sorted(keys_a)

    def matrix(arm: Sequence[Mapping[str, float]]) -> np.ndarray:
        return np.array([[_value(seed.get(k)) for k in keys] for seed in arm], dtype=float).reshape(len(arm),
                                                                                                   len(keys))

    return matrix(a), matrix(b), keys


def _value(v: Any) -> float:
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return math.nan
    return float(v)


def paired_diff(a: Sequence[Mapping[str, float]], b: Sequence[Mapping[str, float]], *, n_boot: int = N_BOOT,
                seed: int = 0, level: float = LEVEL, alpha: float = ALPHA, power: float = POWER) -> PairedDiff:
    """A minus B from each arm's per-seed ``{problem: value}`` (see ``to_matrices``)."""
    xa, xb, _ = to_matrices(a, b)
    return paired_bootstrap(xa, xb, n_boot=n_boot, seed=seed, level=level, alpha=alpha, power=power)


def seed_effects(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Each seed's shift of a (seeds x problems) arm, scaled to the seed variance component.

    Returns the shifts to resample (their population variance is the estimated seed-to-seed
    variance sigma2_u) and sigma2_u itself. A seed's raw shift (its mean deviation from the problem
    means) also carries its problems' sampling noise (sigma2_e / P); that part is already in the
    problem resampling, so it is taken out here (method of moments on the two-way residuals), or the
    test would count it twice and be conservative."""
    s = x.shape[0]
    if s < 2:
        return np.zeros(s), 0.0
    ok = np.isfinite(x)
    with np.errstate(invalid="ignore"):
        col = np.nanmean(np.where(ok, x, np.nan), axis=0)
    dev = np.where(ok, x - col, 0.0)
    n_s = ok.sum(1)
    u = dev.sum(1) / np.maximum(n_s, 1)
    u = u - u.mean()
    resid = np.where(ok, dev - u[:, None], 0.0)
    df = int(ok.sum()) - int(ok.any(0).sum()) - s + 1
    sigma2_e = float((resid ** 2).sum() / df) if df > 0 else 0.0
    spread = float((u ** 2).sum() / (s - 1))
    sigma2_u = max(0.0, spread - sigma2_e * float(np.mean(1 / np.maximum(n_s, 1))))
    pop = float((u ** 2).mean())
    return (u * math.sqrt(sigma2_u / pop) if pop > 0 else u), sigma2_u


def paired_bootstrap(xa: np.ndarray, xb: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL,
                     alpha: float = ALPHA, power: float = POWER) -> PairedDiff:
    """A minus B from (seeds x problems) arrays whose columns are the same problems (NaN: not
    scored). Vectorised: a replicate is one problem-count vector (shared by the arms) and one
    seed-count vector per arm, so the cost is a few (n_boot x problems) matrix products."""
    xa, xb = np.atleast_2d(np.asarray(xa, dtype=float)), np.atleast_2d(np.asarray(xb, dtype=float))
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"the arms are not scored on the same problems: {xa.shape[1]} vs {xb.shape[1]} columns")
    if not 0 < level < 1 or not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError("level, alpha and power must be in (0, 1)")
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    ma, mb = np.isfinite(xa), np.isfinite(xb)
    unscored = (int((~ma).sum()), int((~mb).sum()))
    paired = ma.any(axis=0) & mb.any(axis=0)  # scored by at least one seed of each arm
    n = int(paired.sum())
    if n == 0:
        raise ValueError("no problem is scored in both arms")
    means_a = np.where(ma, xa, 0.0).sum(0) / np.maximum(ma.sum(0), 1)
    means_b = np.where(mb, xb, 0.0).sum(0) / np.maximum(mb.sum(0), 1)
    d = (means_a - means_b)[paired]  # per problem: the seed-averaged difference
    diff = float(d.mean())
    ua, _ = seed_effects(xa[:, paired])
    ub, _ = seed_effects(xb[:, paired])

    rng = np.random.default_rng(seed)
    reps: list[np.ndarray] = []
    chunk = max(1, 4_000_000 // n)  # bounded memory for long eval sets
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        cp = rng.multinomial(n, np.full(n, 1 / n), size=m)  # the same problem draw for both arms
        ca = rng.multinomial(len(ua), np.full(len(ua), 1 / len(ua)), size=m)
        cb = rng.multinomial(len(ub), np.full(len(ub), 1 / len(ub)), size=m)
        reps.append(cp @ d / n + ca @ ua / len(ua) - cb @ ub / len(ub))
    t = np.concatenate(reps)
    tail = (1 - level) / 2
    lo, hi = (float(x) for x in np.quantile(t, [tail, 1 - tail]))
    se = float(np.std(t, ddof=1))
    if se < 1e-12 * max(1.0, abs(diff)):  # no spread: float noise must not decide the test
        se, lo, hi = 0.0, diff, diff
        p = 1.0 if diff == 0 else 1 / (n_boot + 1)
    else:
        p = float((1 + np.count_nonzero(np.abs(t - diff) >= abs(diff))) / (n_boot + 1))
    return PairedDiff(diff=diff, ci=(lo, hi), p=p, se=se, mde=mde(se, alpha=alpha, power=power), n_problems=n,
                      n_seeds=(xa.shape[0], xb.shape[0]), n_unscored=unscored, n_boot=n_boot, level=level,
                      alpha=alpha, power=power)
