"""Intervals honest at zero and away from it, the no-disparity test, determinism, and a naive permutation oracle."""

from __future__ import annotations

import numpy as np
import pytest

from torchwitness.controls.fairness import confusion_counts, disparities, disparity_intervals
from torchwitness.controls.fairness.intervals import _Family

DP, EO = "demographic_parity_difference", "equalized_odds_difference"


def _draw(rng: np.random.Generator, cells: np.ndarray, rows: int) -> np.ndarray:
    return np.stack([rng.multinomial(rows, c.ravel()).reshape(2, 2) for c in cells])


def _cells(selection: list[float], positives: float = 0.4) -> np.ndarray:
    return np.stack([np.array([[(1 - positives) * (1 - s), (1 - positives) * s], [positives * (1 - s), positives * s]])
                     for s in selection])


@pytest.mark.parametrize(("selection", "rows"), [([0.3, 0.3], 1000), ([0.3, 0.4], 600), ([0.3] * 6, 200)],
                         ids=["zero-2-groups", "gap-0.1-2-groups", "zero-6-groups"])
def test_95pct_interval_covers_the_population_disparity_in_about_95pct_of_trials(selection, rows):
    cells = _cells(selection)
    truth = disparities(cells * 1e9)[DP]
    rng = np.random.default_rng(20261207)
    trials = 160
    hits = 0
    for t in range(trials):
        lo, hi, _ = disparity_intervals(_draw(rng, cells, rows), reps=400, seed=t)[DP]
        hits += lo <= truth <= hi
    # 160 trials: a binomial(160, 0.95) lies in [0.9, 0.99] with probability > 0.99
    assert 0.90 <= hits / trials <= 0.99, hits / trials


def test_equal_groups_give_an_interval_from_zero_and_a_large_p_value():
    c = np.array([[[300, 200], [200, 300]], [[300, 200], [200, 300]]])
    for metric in (DP, EO, "equal_opportunity_difference", "accuracy_difference"):
        lo, hi, p = disparity_intervals(c, seed=1)[metric]
        assert lo == 0.0 and hi > 0 and p > 0.5, metric
    lo, hi, p = disparity_intervals(c, seed=1)["demographic_parity_ratio"]
    assert hi == 1.0 and lo < 1.0 and p > 0.5


def test_clear_disparity_excludes_zero_and_the_test_rejects():
    c = np.array([[[400, 100], [50, 450]], [[700, 100], [100, 100]]])  # selection 0.55 vs 0.2
    point = disparities(c)
    for metric in (DP, EO, "demographic_parity_ratio", "equalized_odds_difference_mean"):
        lo, hi, p = disparity_intervals(c, seed=2)[metric]
        assert lo < point[metric] < hi and p < 0.01, metric
    assert disparity_intervals(c, seed=2)[DP][0] > 0.25
    assert disparity_intervals(c, seed=2)["demographic_parity_ratio"][1] < 0.5


def test_the_interval_reaches_zero_whenever_the_test_does_not_reject():
    rng = np.random.default_rng(5)
    seen = set()
    for t in range(40):
        c = _draw(rng, _cells([0.3, 0.3 + 0.02 * (t % 8), 0.3]), 300)
        lo, _, p = disparity_intervals(c, seed=t, reps=300)[DP]
        seen.add(p >= 0.05)
        assert lo >= 0.0 and (p < 0.05 or lo == 0.0), (lo, p)
    assert seen == {True, False}  # both branches were exercised


def test_the_test_holds_its_level_when_there_is_no_disparity():
    rng = np.random.default_rng(11)
    cells = _cells([0.1, 0.1, 0.1], positives=0.3)
    p = np.array([disparity_intervals(_draw(rng, cells, 80), reps=200, seed=t)[DP][2] for t in range(150)])
    rejected = np.mean(p < 0.05)
    assert 0.01 <= rejected <= 0.09, rejected  # about 5 %, within the binomial noise of 150 trials


def test_deterministic_per_seed_and_undefined_with_fewer_than_two_groups():
    c = np.array([[[300, 80], [40, 200]], [[500, 60], [90, 120]]])
    assert disparity_intervals(c, seed=3) == disparity_intervals(c, seed=3)
    assert disparity_intervals(c, seed=3) != disparity_intervals(c, seed=4)
    only_one = disparity_intervals(c, keep=np.array([True, False]))
    assert all(np.isnan(v).all() for v in only_one.values())
    with pytest.raises(ValueError, match="confidence"):
        disparity_intervals(c, confidence=1.5)


def test_permutation_null_matches_shuffling_rows_across_groups():
    # naive reference: shuffle the predictions across the pooled rows and recompute the selection-rate gap
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1, 2], [100, 250, 400])
    yhat = (rng.random(750) < 0.3).astype(int)
    y = rng.integers(0, 2, 750)
    counts = confusion_counts(groups, y, yhat, 3)
    family = _Family(counts, "selection_rate", np.ones(3, dtype=bool))
    fast = family.permuted(4000, np.random.default_rng(1))
    naive = []
    for _ in range(4000):
        shuffled = rng.permutation(yhat)
        naive.append(float(family.statistic(np.bincount(groups, weights=shuffled) / np.bincount(groups))))
    assert np.mean(fast) == pytest.approx(np.mean(naive), rel=0.03)
    assert np.quantile(fast, 0.95) == pytest.approx(np.quantile(naive, 0.95), rel=0.03)
