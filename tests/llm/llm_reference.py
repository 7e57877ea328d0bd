"""A naive, independent reference for token statistics: float64 numpy, one position at a time."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax
from scipy.stats import entropy


def reference_stats(logits: np.ndarray, tokens: np.ndarray) -> dict[str, list[float]]:
    """``logits [T, V]`` and ``tokens [T]`` -> per-token logprob, entropy, margin, rank (lists)."""
    out: dict[str, list[float]] = {"logprob": [], "entropy": [], "margin": [], "rank": []}
    for z, y in zip(logits.astype(np.float64), tokens, strict=True):
        logp = log_softmax(z)
        p = np.exp(logp)
        out["logprob"].append(float(logp[y]))
        out["entropy"].append(float(entropy(p)))
        top = sorted(p, reverse=True)
        out["margin"].append(float(top[0] - top[1]))
        out["rank"].append(float(sum(1 for v in z if v > z[y]) + 1))
    return out
