"""Intervals and a no-disparity test for between-group disparities that stay honest at zero.

A disparity such as the demographic parity difference is a maximum over group pairs of signed rate gaps. Its
percentile bootstrap is biased upward (the maximum of noisy gaps exceeds the maximum of the true gaps), so when
groups are treated identically the interval almost never contains 0. Instead, for the maximum ``D`` of the gaps:

- **no disparity at all** is tested by permutation: label-preserving reassignments of the outcomes across groups
  (multivariate hypergeometric draws on the counts); the p-value is the share of permutations whose largest
  studentised pairwise gap exceeds the observed one, ties counted half (mid-p, for discrete outcomes). ``0`` is
  inside the interval exactly when this test does not reject at ``1 - confidence``.
- **upper end**: ``max(gap + z * se)`` over every pair. The true maximal pair alone keeps the end above ``D`` with
  probability ``1 - alpha/2`` (an intersection-union bound), whatever the other pairs do.
- **lower end**: ``max(gap - c * se)`` over the pairs that may be maximal (within ``KAPPA`` standard errors of the
  largest gap: generalised moment selection), ``c`` the simulated ``1 - alpha/2`` quantile of the largest of their
  correlated studentised gaps.

Rates are Agresti-Caffo adjusted (one success and one failure added per group) for the centre and the variance of
each gap, so a group with no positive still has a variance; point estimates stay the raw, fairlearn-equal ones.
Written by hand: no maintained library offers simultaneous intervals for max-type disparities on counts.

>>> import numpy as np
>>> same = np.array([[[300, 200], [200, 300]], [[310, 190], [190, 310]]])   # nearly equal groups
>>> out = disparity_intervals(same, seed=0)["demographic_parity_difference"]
>>> out[0], out[2] > 0.05                      # the interval reaches 0 and the test does not reject
(0.0, True)
"""

from __future__ import annotations

from collections.abc import Callable
from statistics import NormalDist

import numpy as np

# slack, in standard errors, within which a gap counts as possibly maximal (moment selection); 2.5 keeps the
# true maximal pairs with ~99 % probability while dropping pairs clearly below, which would widen the lower end
KAPPA = 2.5

METHOD = ("permutation test (mid-p, studentised pairwise gaps) of no disparity; signed pairwise gaps of "
          "Agresti-Caffo rates: upper end "
          "pointwise, lower end simultaneous over the possibly maximal pairs, 0 unless the test rejects")

# (successes, trials) of each rate from counts[..., G, y, yhat]
_FAMILIES: dict[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "selection_rate": lambda c: (c[:, 0, 1] + c[:, 1, 1], c.sum((1, 2))),
    "tpr": lambda c: (c[:, 1, 1], c[:, 1].sum(1)),
    "fpr": lambda c: (c[:, 0, 1], c[:, 0].sum(1)),
    "ppv": lambda c: (c[:, 1, 1], c[:, :, 1].sum(1)),
    "accuracy": lambda c: (c[:, 0, 0] + c[:, 1, 1], c.sum((1, 2))),
}

# metric -> rate families whose gaps it maximises; the ratio and the mean are derived below
_METRICS = {
    "demographic_parity_difference": ("selection_rate",),
    "equalized_odds_difference": ("tpr", "fpr"),
    "equal_opportunity_difference": ("tpr",),
    "predictive_parity_difference": ("ppv",),
    "accuracy_difference": ("accuracy",),
}


class _Family:
    """One rate over the kept groups: successes, trials, adjusted rates and their variances."""

    def __init__(self, counts: np.ndarray, name: str, keep: np.ndarray) -> None:
        x, m = _FAMILIES[name](counts)
        ok = keep & (m > 0)
        self.x, self.m = x[ok].astype(np.int64), m[ok].astype(np.int64)
        self.defined = len(self.m) >= 2
        self.p = (self.x + 1) / (self.m + 2)
        self.var = self.p * (1 - self.p) / (self.m + 2)
        self._null: np.ndarray | None = None

    def gap(self) -> float:
        rates = self.x / self.m
        return float(rates.max() - rates.min())

    def _spread(self) -> np.ndarray:
        """Each pair's standard error of the rate gap under "no disparity" (pooled rate): ``[G, G]``."""
        pooled = self.x.sum() / self.m.sum()
        inv = 1.0 / self.m
        return np.sqrt(pooled * (1 - pooled) * (inv[:, None] + inv[None, :]))

    def statistic(self, rates: np.ndarray) -> np.ndarray:
        """The largest studentised pairwise gap of ``rates[..., G]``: a small group's noise weighs no more than a
        large group's, so the test keeps its level when group sizes differ (the raw gap rejected 3 % at 5 %)."""
        spread = self._spread()
        if not spread.any():  # every outcome alike: no permutation can differ
            return np.zeros(rates.shape[:-1])
        gaps = rates[..., :, None] - rates[..., None, :]
        return np.max(np.where(spread > 0, gaps / np.where(spread > 0, spread, 1), 0.0), axis=(-2, -1))

    def permuted(self, reps: int, rng: np.random.Generator) -> np.ndarray:
        """The statistic under ``reps`` random reassignments of the successes among the groups' trials."""
        if self._null is None:
            left, others = np.full(reps, self.x.sum()), int(self.m.sum())
            if others >= 10**9:  # numpy's hypergeometric stops there; at that size the binomial null is exact enough
                draws = rng.binomial(self.m, self.x.sum() / others, size=(reps, len(self.m)))
            else:
                # multivariate hypergeometric drawn one group at a time, vectorised over the replicates
                # (numpy's multivariate_hypergeometric loops per replicate: 5x slower here)
                draws = np.empty((reps, len(self.m)), dtype=np.int64)
                for g, m in enumerate(self.m[:-1]):
                    others -= int(m)
                    draws[:, g] = rng.hypergeometric(int(m), others, left) if others else left
                    left = left - draws[:, g]
                draws[:, -1] = left
            self._null = self.statistic(draws / self.m)
        return self._null


def _bounds(centres: list[np.ndarray], variances: list[np.ndarray], confidence: float, reps: int,
            rng: np.random.Generator) -> tuple[float, float]:
    """(lower, upper) ends for the maximum signed gap over every ordered pair of every family given."""
    alpha = 1 - confidence
    z = NormalDist().inv_cdf(1 - alpha / 2)
    pairs = []
    for centre, var in zip(centres, variances, strict=True):
        i, j = np.nonzero(~np.eye(len(centre), dtype=bool))
        pairs.append((i, j, centre[i] - centre[j], np.sqrt(var[i] + var[j]), var))
    upper = max(float(np.max(gap + z * se)) for _, _, gap, se, _ in pairs)
    top = max(float(np.max(gap)) for _, _, gap, _, _ in pairs)
    # the largest studentised error of the possibly maximal pairs, simulated from independent group normals
    maxima = np.full(reps, -np.inf)
    for i, j, gap, se, var in pairs:
        sel = gap >= top - KAPPA * se
        if sel.any():
            e = rng.standard_normal((reps, len(var))) * np.sqrt(var)
            maxima = np.maximum(maxima, ((e[:, i[sel]] - e[:, j[sel]]) / se[sel]).max(1))
    c = float(np.quantile(maxima, 1 - alpha / 2))
    lower = max(float(np.max(np.where(gap >= top - KAPPA * se, gap - c * se, -np.inf)))
                for _, _, gap, se, _ in pairs)
    return lower, upper


def _p_value(families: list[_Family], reps: int, rng: np.random.Generator) -> float:
    observed = max(float(f.statistic(f.x / f.m)) for f in families)
    null = np.max([f.permuted(reps, rng) for f in families], axis=0)
    # mid-p: permutations tying the observed statistic count half. With few positives many permutations tie,
    # and counting them whole makes the test reject less often than its level where there is no disparity
    above = np.sum(null > observed + 1e-9)
    ties = np.sum(np.abs(null - observed) <= 1e-9)
    return float((above + 0.5 * ties + 0.5) / (reps + 1))


def _interval(families: list[_Family], estimate: float, confidence: float, reps: int, p: float,
              rng: np.random.Generator) -> tuple[float, float]:
    lower, upper = _bounds([f.p for f in families], [f.var for f in families], confidence, reps, rng)
    low = 0.0 if p >= 1 - confidence else min(max(lower, 0.0), estimate)
    return low, min(max(upper, estimate), 1.0)  # a gap of rates never exceeds 1


def disparity_intervals(counts: np.ndarray, *, keep: np.ndarray | None = None, reps: int = 1000,
                        confidence: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """``{metric: (ci_low, ci_high, p_value)}`` for every disparity of ``counts[G, 2, 2]``; NaN where undefined.

    ``p_value`` tests "no disparity at all" for the metric's rates (equal selection rates for demographic
    parity, equal TPR and FPR for equalized odds, ...). ``reps`` is the number of permutations and of simulated
    draws for the lower end's critical value; the result is deterministic per ``seed``.
    """
    if not 0 < confidence < 1 or reps < 1:
        raise ValueError("confidence must lie in (0, 1) and reps be positive")
    c = np.asarray(counts, dtype=np.int64).reshape(-1, 2, 2)
    keep = np.ones(len(c), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    rng = np.random.default_rng(seed)
    fam = {name: _Family(c, name, keep) for name in _FAMILIES}
    nan = (float("nan"),) * 3
    out: dict[str, tuple[float, float, float]] = {}
    for metric, names in _METRICS.items():
        families = [fam[n] for n in names]
        if not all(f.defined for f in families):
            out[metric] = nan
            continue
        p = _p_value(families, reps, rng)
        estimate = max(f.gap() for f in families)
        out[metric] = (*_interval(families, estimate, confidence, reps, p, rng), p)
    out["demographic_parity_ratio"] = _ratio(fam["selection_rate"], out["demographic_parity_difference"][2],
                                             confidence, reps, rng)
    out["equalized_odds_difference_mean"] = _mean(fam["tpr"], fam["fpr"], out["equalized_odds_difference"][2],
                                                  confidence, reps, rng)
    return out


def _ratio(f: _Family, p: float, confidence: float, reps: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """min/max of the rates is ``exp(-D)`` for ``D`` the largest gap of the log rates (delta-method variances)."""
    rates = f.x / np.maximum(f.m, 1)
    if not f.defined or rates.max() <= 0:
        return (float("nan"),) * 3
    estimate = float(rates.min() / rates.max())
    lower, upper = _bounds([np.log(f.p)], [(1 - f.p) / ((f.m + 2) * f.p)], confidence, reps, rng)
    high = 1.0 if p >= 1 - confidence else max(min(float(np.exp(-max(lower, 0.0))), 1.0), estimate)
    return min(float(np.exp(-upper)), estimate), high, p


def _mean(tpr: _Family, fpr: _Family, p: float, confidence: float, reps: int,
          rng: np.random.Generator) -> tuple[float, float, float]:
    """The mean of the TPR and FPR gaps: each gap's interval at ``1 - alpha/2`` (Bonferroni), averaged."""
    if not (tpr.defined and fpr.defined):
        return (float("nan"),) * 3
    estimate = (tpr.gap() + fpr.gap()) / 2
    inner = 1 - (1 - confidence) / 2
    (lt, ut), (lf, uf) = (_bounds([f.p], [f.var], inner, reps, rng) for f in (tpr, fpr))
    low = 0.0 if p >= 1 - confidence else min((max(lt, 0.0) + max(lf, 0.0)) / 2, estimate)
    return low, min(max((ut + uf) / 2, estimate), 1.0), p

