"""Window-cluster BCa bootstrap for ratio-of-sums statistics, vectorised with numpy.

Every paired metric here is a ratio of per-window sums, ``theta = sum_w num_w / sum_w den_w`` (mean per-token
Δ log-loss, mean KL, top-1 agreement, accuracy difference). Tokens of one window are not independent, so
windows are resampled whole (a cluster bootstrap): a replicate is a multinomial count vector over windows,
and its statistics are one matrix product ``counts @ sums``. Counts are built ``_CHUNK`` replicates at a time
with one ``bincount``, small enough to stay in cache.

BCa (Efron 1987): the bias correction ``z0`` comes from the share of replicates below the estimate and the
acceleration ``a`` from the leave-one-window-out jackknife, which for a ratio of sums is closed-form. The
Monte-Carlo error of each interval end is the standard deviation of that end over resamples of the replicate
vector (a bootstrap of the bootstrap, cheap because it only re-sorts replicates).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> num, den = rng.normal(0.1, 1, 500) * 100, np.full(500, 100.0)
>>> b = ratio_bootstrap(num, den, replicates=2000, seed=1)
>>> lo, hi = b.interval(0)[:2]
>>> bool(lo < 0.1 < hi)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from torchwitness.errors import InputError

_CHUNK = 16
_MC_RESAMPLES = 200
_N = NormalDist()


_phi = np.vectorize(_N.cdf, otypes=[float])


def _phi_inv(p: float) -> float:
    return _N.inv_cdf(min(max(p, 1e-12), 1 - 1e-12))


def replicate_counts(windows: int, replicates: int, seed: int):
    """Yield ``(start, counts)``: multinomial resampling counts of ``windows`` windows, ``_CHUNK`` rows at a time."""
    rng = np.random.default_rng(seed)
    for start in range(0, replicates, _CHUNK):
        c = min(_CHUNK, replicates - start)
        idx = rng.integers(0, windows, size=(c, windows), dtype=np.int64)
        idx += (np.arange(c, dtype=np.int64) * windows)[:, None]
        yield start, np.bincount(idx.ravel(), minlength=c * windows).reshape(c, windows)


@dataclass
class Bootstrap:
    """Estimates, replicates and BCa constants of ``k`` ratio statistics over the same resampled windows."""

    estimate: np.ndarray  # [k]
    replicates: np.ndarray  # [B, k]
    z0: np.ndarray  # [k]
    accel: np.ndarray  # [k]
    seed: int

    def degenerate(self, j: int) -> bool:
        """True when every replicate equals the estimate (e.g. an identical subject): no spread to use."""
        r = self.replicates[:, j]
        return bool(np.all(r == self.estimate[j]))

    def _levels(self, j: int, alphas: np.ndarray) -> np.ndarray:
        z0, a = self.z0[j], self.accel[j]
        z = np.array([_phi_inv(float(x)) for x in alphas])
        return _phi(z0 + (z0 + z) / (1 - a * (z0 + z)))

    def interval(self, j: int, level: float = 0.95) -> tuple[float, float, float, float]:
        """Two-sided BCa interval of statistic ``j``: ``(low, high, mc_se_low, mc_se_high)``."""
        if self.degenerate(j):
            e = float(self.estimate[j])
            return e, e, 0.0, 0.0
        tail = (1 - level) / 2
        levels = self._levels(j, np.array([tail, 1 - tail]))
        r = self.replicates[:, j]
        lo, hi = np.quantile(r, levels)
        rng = np.random.default_rng(self.seed + 1)
        resampled = r[rng.integers(0, len(r), size=(_MC_RESAMPLES, len(r)))]
        ends = np.quantile(resampled, levels, axis=1)
        return float(lo), float(hi), float(ends[0].std(ddof=1)), float(ends[1].std(ddof=1))

    def bound(self, j: int, confidence: float, side: str) -> float:
        """One-sided BCa bound: the upper bound (``side="upper"``) or the lower one at ``confidence``."""
        if self.degenerate(j):
            return float(self.estimate[j])
        alpha = confidence if side == "upper" else 1 - confidence
        return float(np.quantile(self.replicates[:, j], self._levels(j, np.array([alpha]))[0]))

    def p_value(self, j: int, margin: float, side: str) -> float:
        """One-sided p-value of H0 "statistic ``j`` is beyond ``margin``" by inverting the BCa bound.

        ``side="upper"``: H0 ``theta >= margin`` (smaller is better). ``side="lower"``: H0 ``theta <= margin``.
        The p-value is the ``alpha`` at which the (1 - alpha) BCa bound sits exactly on the margin.
        """
        e = float(self.estimate[j])
        if not np.isfinite(e) or not np.all(np.isfinite(self.replicates[:, j])):
            return 1.0  # fail closed: a non-finite statistic (e.g. NaN logits) can never show non-inferiority
        if self.degenerate(j):
            ok = e < margin if side == "upper" else e > margin
            return 0.0 if ok else 1.0
        r = self.replicates[:, j]
        b = len(r)
        g = min(max(float(np.mean(r <= margin)), 0.5 / b), 1 - 0.5 / b)
        z0, a = float(self.z0[j]), float(self.accel[j])
        w = _phi_inv(g) - z0
        u = w / (1 + a * w)
        level = float(_phi(u - z0))  # the nominal level whose BCa quantile is exactly the margin
        return 1.0 - level if side == "upper" else level


def ratio_bootstrap(num: np.ndarray, den: np.ndarray, *, replicates: int, seed: int) -> Bootstrap:
    """Cluster bootstrap of ``sum(num[:, j]) / sum(den[:, j])`` for each column ``j`` (1-D inputs allowed)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    if num.ndim == 1:
        num = num[:, None]
    if den.ndim == 1:
        den = np.repeat(den[:, None], num.shape[1], axis=1)
    if num.shape != den.shape or num.ndim != 2:
        raise InputError(f"numerators {num.shape} and denominators {den.shape} do not match")
    w, k = num.shape
    if w < 2:
        raise InputError("a cluster bootstrap needs at least two windows")
    if replicates < 100:
        raise InputError("use at least 100 bootstrap replicates")
    if np.any(den.sum(0) <= 0):
        raise InputError("every statistic needs a positive total denominator")
    both = np.concatenate([num, den], axis=1)
    sums = np.empty((replicates, 2 * k))
    for start, counts in replicate_counts(w, replicates, seed):
        sums[start:start + len(counts)] = counts @ both
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = sums[:, :k] / sums[:, k:]
    total_num, total_den = num.sum(0), den.sum(0)
    estimate = total_num / total_den
    # A replicate that drew only zero-denominator windows has no value: it counts as equal to the estimate.
    reps = np.where(np.isfinite(reps), reps, estimate)
    below = (reps < estimate).mean(0) + 0.5 * (reps == estimate).mean(0)
    z0 = np.array([_phi_inv(float(x)) for x in below])
    with np.errstate(divide="ignore", invalid="ignore"):
        jack = (total_num - num) / (total_den - den)  # leave-one-window-out, closed form
    jack = np.where(np.isfinite(jack), jack, estimate)
    d = jack.mean(0) - jack
    denom = 6 * (d ** 2).sum(0) ** 1.5
    accel = np.divide((d ** 3).sum(0), denom, out=np.zeros(k), where=denom > 0)
    return Bootstrap(estimate, reps, z0, accel, seed)
