"""``rlkd_bench.stats``: the paired comparison of two arms, checked on simulated studies whose truth
is known (an effect, or none), the way the mini study and ``report --eval`` use it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlkd_bench.report import bootstrap_ci
from rlkd_bench.stats import mde, paired_bootstrap, paired_diff, seed_effects


def simulate(rng: np.random.Generator, problems: int, seeds: tuple[int, int], effect: float = 0.0, *,
             k: int = 4, seed_sd: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Two arms on the same problems: each problem has its own difficulty (shared by the arms),
    each training seed shifts its arm, and a problem's value is pass@1 over k samples."""
    q = 0.2 + 0.5 * rng.beta(2, 2, size=problems)
    arms = []
    for arm, n_seeds in enumerate(seeds):
        shift = effect if arm == 0 else 0.0
        arms.append(np.array([rng.binomial(k, np.clip(q + shift + rng.normal(0, seed_sd), 0, 1)) / k
                              for _ in range(n_seeds)]))
    return arms[0], arms[1]


def test_a_known_effect_is_detected_and_its_interval_covers_the_truth():
    rng = np.random.default_rng(2)
    covered = detected = 0
    for i in range(100):
        a, b = simulate(rng, 200, (3, 3), effect=0.1)
        r = paired_bootstrap(a, b, n_boot=200, seed=i)
        covered += r.ci[0] <= 0.1 <= r.ci[1]
        detected += r.supported
    assert detected >= 95 and 88 <= covered <= 100
    a, b = simulate(np.random.default_rng(0), 200, (3, 3), effect=0.1)
    r = paired_bootstrap(a, b)
    assert r.supported and r.diff == pytest.approx(0.1, abs=0.03) and r.p < 0.01 and r.ci[0] > 0
    assert r.n_problems == 200 and r.n_seeds == (3, 3) and r.mde < 0.1


def test_with_no_effect_the_false_positive_rate_is_near_five_percent():
    rng = np.random.default_rng(1)
    sims = 400
    hits = sum(paired_bootstrap(*simulate(rng, 50, (2, 2)), n_boot=200, seed=i).supported for i in range(sims))
    assert 0.02 <= hits / sims <= 0.09, hits / sims


def test_pairing_sees_what_overlapping_intervals_miss():
    """The old rule (two unpaired 95% intervals that do not overlap) against the paired test, on
    64 problems, one seed per arm and a true difference of 0.1 in pass@1 (measured: the paired
    test finds 38 of 60, the overlap rule 14)."""
    rng = np.random.default_rng(3)
    paired = overlap = 0
    for i in range(60):
        a, b = simulate(rng, 64, (1, 1), effect=0.1, seed_sd=0.0)
        paired += paired_bootstrap(a, b, n_boot=200, seed=i).supported
        (lo_a, _), (_, hi_b) = bootstrap_ci(a[0].tolist(), n=200, seed=i), bootstrap_ci(b[0].tolist(), n=200, seed=i)
        overlap += lo_a > hi_b
    assert paired >= 2 * overlap and paired >= 30


def test_the_mde_shrinks_as_problems_grow():
    rng = np.random.default_rng(4)
    mdes = [paired_bootstrap(*simulate(rng, n, (3, 3)), n_boot=500).mde for n in (32, 128, 512)]
    assert mdes[0] > mdes[1] > mdes[2] > 0
    assert mdes[0] / mdes[2] == pytest.approx(4, rel=0.5)  # about 1/sqrt(problems)
    assert mde(0.01) == pytest.approx(0.028016, abs=1e-5)  # (1.95996 + 0.84162) * SE


def test_the_same_inputs_give_the_same_answer():
    a, b = simulate(np.random.default_rng(5), 40, (2, 3), effect=0.05)
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)
    assert paired_bootstrap(a, b, seed=1).ci != paired_bootstrap(a, b).ci  # the seed is what fixes it


def test_identical_arms_differ_by_nothing():
    a = np.array([[0.0, 0.5, 1.0, 0.25]])
    r = paired_bootstrap(a, a.copy())
    assert (r.diff, r.ci, r.se, r.p, r.supported) == (0.0, (0.0, 0.0), 0.0, 1.0, False)


def test_unscored_cells_are_left_out_and_counted_never_zero():
    a = [{"p1": 1.0, "p2": math.nan, "p3": 0.5}, {"p1": 1.0, "p2": 0.0, "p3": None}]
    b = [{"p1": 0.0, "p2": 0.0, "p3": 0.5}]
    r = paired_diff(a, b)
    # per problem, A over the seeds that scored it: p1 1.0, p2 0.0, p3 0.5; minus B: 1, 0, 0
    assert r.diff == pytest.approx(1 / 3) and r.n_unscored == (2, 0) and r.n_problems == 3
    never = paired_diff([{"p1": 1.0, "p2": math.nan}], [{"p1": 0.0, "p2": 0.0}])
    assert never.n_problems == 1 and never.diff == 1.0  # p2 unscored in A: no pair, not a 0


def test_arms_on_different_problems_are_refused():
    with pytest.raises(ValueError, match=r"not scored on the same problems: 2 vs 2, 1 shared; only in A: p2"):
        paired_diff([{"p1": 1.0, "p2": 0.0}], [{"p1": 1.0, "p3": 0.0}])
    with pytest.raises(ValueError, match="same problems"):
        paired_bootstrap(np.zeros((1, 3)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="no problem is scored in both arms"):
        paired_diff([{"p1": math.nan}], [{"p1": 1.0}])
    with pytest.raises(ValueError, match="at least one seed"):
        paired_diff([], [{"p1": 1.0}])


def test_seed_effects_keep_only_the_seed_to_seed_part():
    rng = np.random.default_rng(6)
    base = rng.binomial(4, 0.5, size=(1, 400)) / 4
    shifted = base + np.array([[-0.1], [0.0], [0.1]])  # three seeds, shifts known exactly
    u, var = seed_effects(shifted)
    assert var == pytest.approx(0.01) and np.allclose(u, [-0.1 * math.sqrt(1.5), 0, 0.1 * math.sqrt(1.5)])
    noise = rng.binomial(4, 0.5, size=(3, 400)) / 4  # seeds that differ by sampling noise only
    assert seed_effects(noise)[1] < 0.0005
    assert seed_effects(base)[1] == 0.0  # one seed: nothing to tell
