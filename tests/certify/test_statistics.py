from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from torchwitness.certify.bootstrap import ratio_bootstrap, replicate_counts
from torchwitness.certify.stats import holm, mcnemar_exact


def synthetic_windows(rng: np.random.Generator, windows: int, mu: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-window sums of per-token Δ log-loss with a window effect and skewed token noise; true mean ``mu``."""
    n = rng.integers(64, 129, windows).astype(float)
    effect = rng.normal(0.0, 0.05, windows)
    noise = (rng.gamma(2.0, 0.5, windows) - 1.0) * np.sqrt(n) * 0.3  # mean zero, right-skewed
    return n * (mu + effect) + noise, n


def test_bca_interval_covers_the_true_ratio_95_percent_of_the_time():
    rng = np.random.default_rng(2024)
    true_log_ratio = 0.03  # perplexity ratio exp(0.03)
    trials, hits = 320, 0
    for t in range(trials):
        num, den = synthetic_windows(rng, 150, true_log_ratio)
        b = ratio_bootstrap(num, den, replicates=999, seed=t)
        lo, hi, _, _ = b.interval(0, 0.95)
        hits += math.exp(lo) <= math.exp(true_log_ratio) <= math.exp(hi)
    assert 0.92 <= hits / trials <= 0.98, hits / trials


def test_vectorised_replicates_match_a_naive_resampling_loop():
    rng = np.random.default_rng(0)
    num, den = rng.normal(size=40), rng.integers(1, 10, 40).astype(float)
    b = ratio_bootstrap(num, den, replicates=160, seed=7)
    # Same random draws, resampled with an explicit loop over replicates and drawn indices.
    draws = np.random.default_rng(7)
    naive = []
    for _ in range(10):  # 160 replicates in chunks of 16, as replicate_counts draws them
        idx = draws.integers(0, 40, size=(16, 40), dtype=np.int64)
        for row in idx:
            naive.append(sum(num[i] for i in row) / sum(den[i] for i in row))
    np.testing.assert_allclose(b.replicates[:, 0], naive, rtol=1e-12)
    counts = np.concatenate([c for _, c in replicate_counts(40, 160, 7)])
    assert counts.shape == (160, 40) and np.all(counts.sum(1) == 40)


def test_jackknife_acceleration_matches_explicit_leave_one_out():
    rng = np.random.default_rng(1)
    num, den = rng.gamma(2, size=30), rng.integers(5, 20, 30).astype(float)
    b = ratio_bootstrap(num, den, replicates=200, seed=0)
    jack = np.array([np.delete(num, i).sum() / np.delete(den, i).sum() for i in range(30)])
    d = jack.mean() - jack
    assert b.accel[0] == pytest.approx((d ** 3).sum() / (6 * (d ** 2).sum() ** 1.5), rel=1e-9)


def test_p_value_inverts_the_bca_bound():
    rng = np.random.default_rng(3)
    num, den = synthetic_windows(rng, 200, 0.01)
    b = ratio_bootstrap(num, den, replicates=2000, seed=1)
    for margin in (0.015, 0.02, 0.03):
        p = b.p_value(0, margin, "upper")
        # H0 "theta >= margin" is rejected at level alpha exactly when the (1 - alpha) upper bound is below it.
        for alpha in (0.01, 0.05, 0.2):
            if abs(p - alpha) > 0.005:
                assert (p <= alpha) == (b.bound(0, 1 - alpha, "upper") < margin)
    assert b.p_value(0, 0.0, "lower") == pytest.approx(1 - b.p_value(0, 0.0, "upper"))


def test_identical_windows_give_a_point_interval_and_a_decisive_p_value():
    b = ratio_bootstrap(np.zeros(50), np.full(50, 128.0), replicates=500, seed=0)
    assert b.interval(0) == (0.0, 0.0, 0.0, 0.0)
    assert b.p_value(0, math.log(1.05), "upper") == 0.0


def test_monte_carlo_error_shrinks_with_more_replicates():
    rng = np.random.default_rng(4)
    num, den = synthetic_windows(rng, 300, 0.02)
    small = ratio_bootstrap(num, den, replicates=200, seed=0).interval(0)[2]
    large = ratio_bootstrap(num, den, replicates=5000, seed=0).interval(0)[2]
    assert 0 < large < small


@pytest.mark.parametrize(("b", "c"), [(0, 0), (10, 2), (3, 4), (40, 21), (0, 9), (120, 80)])
def test_mcnemar_matches_scipy_binomial_test(b, c):
    expected = 1.0 if b + c == 0 else sps.binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)


def test_holm_against_its_definition():
    p = {"a": 0.001, "b": 0.02, "c": 0.03, "d": 0.2}
    # sorted thresholds: 0.05/4, 0.05/3, 0.05/2, 0.05/1 -> a passes, b (0.02 > 0.0167) stops the procedure
    assert holm(p, 0.05) == {"a": True, "b": False, "c": False, "d": False}
    assert holm({"a": 0.01, "b": 0.02}, 0.05) == {"a": True, "b": True}
