"""Bootstrap intervals: coverage by simulation, determinism by seed, and the bootstrap equals a row bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from torchwitness.controls.fairness import bootstrap_ci, confusion_counts, disparities
from torchwitness.controls.fairness.functional import bootstrap_counts


def test_95pct_interval_covers_true_difference_92_to_98pct_of_400_trials():
    # two groups of 600 rows; true cell probabilities (y, yhat) differ, so every disparity has a known value
    p = np.array([[[0.45, 0.15], [0.10, 0.30]],     # selection 0.45, TPR 0.75, FPR 0.25
                  [[0.50, 0.10], [0.15, 0.25]]])    # selection 0.35, TPR 0.625, FPR 1/6
    truth = disparities(p * 1000)
    trials, n = 400, 600
    rng = np.random.default_rng(20261124)
    data = rng.multinomial(n, p.reshape(2, 4), size=(trials, 2)).reshape(trials, 2, 2, 2)
    ci = bootstrap_ci(data, reps=1000, seed=7)
    for metric in ("demographic_parity_difference", "equal_opportunity_difference",
                   "equalized_odds_difference_mean", "predictive_parity_difference"):
        lo, hi = ci[metric]
        coverage = np.mean((lo <= truth[metric]) & (truth[metric] <= hi))
        assert 0.92 <= coverage <= 0.98, (metric, coverage)


def test_interval_is_deterministic_per_seed():
    c = np.array([[[300, 80], [40, 200]], [[500, 60], [90, 120]]])
    assert bootstrap_ci(c, seed=3) == bootstrap_ci(c, seed=3)
    assert bootstrap_ci(c, seed=3) != bootstrap_ci(c, seed=4)


def test_cell_multinomial_matches_row_resampling_in_distribution():
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1], [300, 500])
    y, yhat = rng.integers(0, 2, 800), rng.integers(0, 2, 800)
    counts = confusion_counts(groups, y, yhat, 2)
    cells = disparities(bootstrap_counts(counts, 4000, np.random.default_rng(1)))["demographic_parity_difference"]
    # naive reference: resample rows within each group
    idx = [np.flatnonzero(groups == g) for g in (0, 1)]
    rows = []
    for _ in range(4000):
        pick = np.concatenate([rng.choice(i, len(i)) for i in idx])
        rows.append(disparities(confusion_counts(groups[pick], y[pick], yhat[pick], 2))
                    ["demographic_parity_difference"])
    assert np.mean(cells) == pytest.approx(np.mean(rows), abs=0.003)
    assert np.std(cells) == pytest.approx(np.std(rows), rel=0.06)
