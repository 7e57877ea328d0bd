"""Drift statistics as pure numpy functions (the stateful monitor lives in :mod:`.monitor`).

Hand-written rather than imported from scipy because scipy is not a core dependency; the tests check every
function against scipy (``ks_2samp``) or a naive reference (MMD).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> d, p = ks_2samp(rng.normal(size=500), rng.normal(size=500))
>>> p > 0.01
True
"""

from __future__ import annotations

import math

import numpy as np


def quantile_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Interior bin edges at the reference's quantiles (duplicates removed, so discrete features work)."""
    qs = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(qs)


def psi(reference_counts: np.ndarray, current_counts: np.ndarray, eps: float = 1e-4) -> float:
    """Population stability index ``sum((c - r) * ln(c / r))`` over bin proportions (eps-smoothed)."""
    r = reference_counts / max(reference_counts.sum(), 1)
    c = current_counts / max(current_counts.sum(), 1)
    r = np.clip(r, eps, None)
    c = np.clip(c, eps, None)
    return float(np.sum((c - r) * np.log(c / r)))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)


def kolmogorov_sf(x: float) -> float:
    """Survival function of the Kolmogorov distribution, ``2 sum (-1)^(k-1) exp(-2 k^2 x^2)``."""
    if x <= 0:
        return 1.0
    if x < 0.2:  # the alternating series converges slowly here, and the value is 1 to double precision
        return 1.0
    total = 0.0
    for k in range(1, 101):
        term = math.exp(-2.0 * k * k * x * x)
        total += term if k % 2 else -term
        if term < 1e-16:
            break
    return min(1.0, max(0.0, 2.0 * total))


def ks_statistic(reference_sorted: np.ndarray, current: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov D with the reference already sorted."""
    cur = np.sort(current)
    grid = np.concatenate([reference_sorted, cur])
    cdf_r = np.searchsorted(reference_sorted, grid, side="right") / len(reference_sorted)
    cdf_c = np.searchsorted(cur, grid, side="right") / len(cur)
    return float(np.max(np.abs(cdf_r - cdf_c)))


def ks_2samp(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """(D, asymptotic two-sided p-value), as ``scipy.stats.ks_2samp(..., method="asymp")``."""
    d = ks_statistic(np.sort(reference), current)
    n, m = len(reference), len(current)
    en = math.sqrt(n * m / (n + m))
    return d, kolmogorov_sf(en * d)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)


def median_bandwidth(x: np.ndarray) -> float:
    """The median heuristic: median pairwise distance (on at most 500 rows)."""
    sample = x[:500]
    d = np.sqrt(_sq_dists(sample, sample))
    med = float(np.median(d[np.triu_indices(len(sample), 1)])) if len(sample) > 1 else 1.0
    return med if med > 0 else 1.0


def mmd2_unbiased(kernel: np.ndarray, n: int) -> float:
    """Unbiased MMD^2 from a joint kernel matrix whose first ``n`` rows/cols are sample X, the rest sample Y."""
    kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    m = kernel.shape[0] - n
    sxx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def mmd_test(x: np.ndarray, y: np.ndarray, *, permutations: int = 200, bandwidth: float | None = None,
             seed: int = 0) -> tuple[float, float]:
    """(MMD^2, permutation p-value) with an RBF kernel; permutations vectorised over one kernel matrix."""
    z = np.concatenate([x, y]).astype(np.float64)
    n = len(x)
    bw = bandwidth or median_bandwidth(z)
    kernel = np.exp(-_sq_dists(z, z) / (2 * bw * bw))
    observed = mmd2_unbiased(kernel, n)
    rng = np.random.default_rng(seed)
    total = len(z)
    diag = np.diag(kernel)
    row_sums = kernel.sum(1)
    exceed = 0
    for _ in range(permutations):
        idx = rng.permutation(total)
        xi, yi = idx[:n], idx[n:]
        m = total - n
        kxx = kernel[np.ix_(xi, xi)].sum() - diag[xi].sum()
        kyy = kernel[np.ix_(yi, yi)].sum() - diag[yi].sum()
        kxy = row_sums[xi].sum() - kernel[np.ix_(xi, xi)].sum()
        stat = kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (n * m)
        exceed += stat >= observed
    return observed, (exceed + 1) / (permutations + 1)


def proportion_shift(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """Largest absolute change in class proportion and its two-proportion z-test p-value (pooled)."""
    n_r, n_c = reference_counts.sum(), current_counts.sum()
    p_r, p_c = reference_counts / n_r, current_counts / n_c
    diff = np.abs(p_c - p_r)
    k = int(np.argmax(diff))
    pooled = (reference_counts[k] + current_counts[k]) / (n_r + n_c)
    se = math.sqrt(max(pooled * (1 - pooled) * (1 / n_r + 1 / n_c), 1e-300))
    z = diff[k] / se
    return float(diff[k]), math.erfc(z / math.sqrt(2))


def accuracy_drop(reference_correct: int, reference_rows: int, correct: int, rows: int) -> tuple[float, float]:
    """How far accuracy fell below the reference's, and its one-sided two-proportion z-test p-value (pooled): a
    window doing better is no alert."""
    p_r, p_c = reference_correct / reference_rows, correct / rows
    pooled = (reference_correct + correct) / (reference_rows + rows)
    se = math.sqrt(max(pooled * (1 - pooled) * (1 / reference_rows + 1 / rows), 1e-300))
    drop = p_r - p_c
    return float(drop), 0.5 * math.erfc(drop / se / math.sqrt(2))
