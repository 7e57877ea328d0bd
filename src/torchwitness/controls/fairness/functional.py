"""Fairness maths on confusion counts: pure numpy, no state, no torch.

Everything starts from a counts array ``c[..., g, y, yhat]`` (``y``, ``yhat`` in {0, 1}) so the same code serves
a point estimate (``c`` of shape ``[G, 2, 2]``) and many at once (``[B, G, 2, 2]``). A rate whose denominator is
zero is NaN ("undefined"), never 0: fairlearn reports 0 there, which reads as a measured value.

>>> import numpy as np
>>> c = np.array([[[40, 10], [5, 45]], [[70, 10], [10, 10]]])  # two groups
>>> round(float(group_rates(c)["selection_rate"][0]), 2), round(float(group_rates(c)["selection_rate"][1]), 2)
(0.55, 0.2)
>>> round(disparities(c)["demographic_parity_difference"], 2)
0.35
"""

from __future__ import annotations

from typing import Any

import numpy as np

RATES = ("selection_rate", "accuracy", "tpr", "fpr", "ppv")
DISPARITIES = ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
               "equalized_odds_difference_mean", "equal_opportunity_difference", "predictive_parity_difference",
               "accuracy_difference")


def confusion_counts(groups: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, n_groups: int) -> np.ndarray:
    """One ``np.bincount`` pass: ``[n_groups, 2, 2]`` counts of (group, label, prediction)."""
    idx = (np.asarray(groups, dtype=np.int64) * 2 + np.asarray(y_true, dtype=np.int64)) * 2 \
        + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=n_groups * 4).reshape(n_groups, 2, 2)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def group_rates(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per-group rates (NaN where undefined) and sizes from ``counts[..., G, 2, 2]``."""
    c = np.asarray(counts, dtype=np.float64)
    tn, fp, fn, tp = c[..., 0, 0], c[..., 0, 1], c[..., 1, 0], c[..., 1, 1]
    n = tn + fp + fn + tp
    return {"n": n, "selection_rate": _ratio(tp + fp, n), "accuracy": _ratio(tp + tn, n),
            "tpr": _ratio(tp, tp + fn), "fpr": _ratio(fp, fp + tn), "ppv": _ratio(tp, tp + fp)}


def _spread(x: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max - min, min / max) over the kept groups of the last axis, ignoring undefined rates."""
    x = np.where(keep, x, np.nan)
    defined = ~np.isnan(x)
    # fewer than two defined groups: no comparison exists, so the disparity is undefined, not 0
    enough = defined.sum(-1) >= 2
    hi = np.max(np.where(defined, x, -np.inf), axis=-1)
    lo = np.min(np.where(defined, x, np.inf), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(enough, hi - lo, np.nan), np.where(enough & (hi > 0), lo / np.where(hi > 0, hi, 1), np.nan)


def disparities(counts: np.ndarray, keep: np.ndarray | None = None) -> dict[str, Any]:
    """Between-group disparities (fairlearn's ``between_groups`` method) over the groups in ``keep``.

    ``equalized_odds_difference`` is fairlearn's ``agg="worst_case"`` (the larger of the TPR and FPR
    differences); ``equalized_odds_difference_mean`` is ``agg="mean"``. Scalars for ``[G, 2, 2]`` input,
    arrays over the leading axes otherwise.
    """
    r = group_rates(counts)
    keep = np.ones(r["n"].shape[-1], dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    sel_d, sel_r = _spread(r["selection_rate"], keep)
    tpr_d, _ = _spread(r["tpr"], keep)
    fpr_d, _ = _spread(r["fpr"], keep)
    ppv_d, _ = _spread(r["ppv"], keep)
    acc_d, _ = _spread(r["accuracy"], keep)
    out = {"demographic_parity_difference": sel_d, "demographic_parity_ratio": sel_r,
           "equalized_odds_difference": np.maximum(tpr_d, fpr_d),
           "equalized_odds_difference_mean": (tpr_d + fpr_d) / 2,
           "equal_opportunity_difference": tpr_d, "predictive_parity_difference": ppv_d,
           "accuracy_difference": acc_d}
    return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in out.items()}
