"""From intersectional confusion counts to the ``fairness.eval`` record: views, groups, disparities, CIs."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np

from torchwitness.controls.fairness.functional import RATES, disparities, group_rates
from torchwitness.controls.fairness.groups import GroupEncoder
from torchwitness.controls.fairness.intervals import METHOD, disparity_intervals
from torchwitness.errors import InputError
from torchwitness.ledger.schema import register_kind


class GroupStats(msgspec.Struct):
    """One group of one view. Rates are null where undefined; ``status`` is ``ok`` or ``insufficient``."""

    name: str
    n: int
    status: str
    selection_rate: float | None
    accuracy: float | None
    tpr: float | None
    fpr: float | None
    ppv: float | None


class Disparity(msgspec.Struct):
    """A between-group disparity, its interval and the p-value of "no disparity at all" (null when undefined).

    ``ci_low`` is 0 (1 for a ratio's ``ci_high``) exactly when the test does not reject at ``1 - confidence``.
    """

    metric: str
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None = None


class FairnessView(msgspec.Struct):
    """Groups formed by one attribute, or by the intersection of several."""

    attributes: list[str]
    groups: list[GroupStats]
    insufficient: list[str]
    disparities: list[Disparity]


class GateDecision(msgspec.Struct):
    """What a :class:`FairnessGate` concluded for this evaluation."""

    metric: str
    view: str
    bound: str
    threshold: float
    value: float | None
    violated: bool
    policy: str
    action: str
    reason: str


class FairnessEval(msgspec.Struct):
    epoch: int | None
    split: str
    rows: int
    min_group_size: int
    confidence: float
    reps: int
    seed: int
    views: list[FairnessView]
    gate: GateDecision | None = None
    method: str | None = None  # how the intervals and p-values were computed; null in records from before

    def __repr__(self) -> str:
        """One line per view with its headline disparities, instead of every group's every rate."""
        lines = [f"FairnessEval(split={self.split!r}, epoch={self.epoch}, rows={self.rows:,})"]
        for v in self.views:
            parts = [_brief(d) for d in v.disparities
                     if d.metric in ("demographic_parity_difference", "equalized_odds_difference")]
            lines.append(f"  {view_name(v.attributes)} ({len(v.groups)} groups): " + "; ".join(parts))
        if self.gate is not None:
            lines.append(f"  gate: {self.gate.reason} -> {self.gate.action}")
        return "\n".join(lines)


register_kind("fairness.eval", FairnessEval)


def _brief(d: Disparity) -> str:
    if d.estimate is None:
        return f"{d.metric} undefined"
    ci = f" [{d.ci_low:.3f}, {d.ci_high:.3f}]" if d.ci_low is not None and d.ci_high is not None else ""
    p = f" p={d.p_value:.3g}" if d.p_value is not None else ""
    return f"{d.metric} {d.estimate:.3f}{ci}{p}"


def _num(x: Any) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def view_name(attributes: list[str] | tuple[str, ...]) -> str:
    return "&".join(attributes)


def _view(counts: np.ndarray, names: list[str], attrs: list[str], *, min_group_size: int, reps: int,
          confidence: float, seed: int) -> FairnessView:
    n = counts.sum((1, 2))
    keep = n >= min_group_size
    rates = group_rates(counts)
    groups = [GroupStats(name=names[g], n=int(n[g]), status="ok" if keep[g] else "insufficient",
                         **{r: _num(rates[r][g]) for r in RATES}) for g in range(len(names))]
    point = disparities(counts, keep)
    ci = disparity_intervals(counts, keep=keep, reps=reps, confidence=confidence, seed=seed) if reps else {}
    return FairnessView(
        attributes=attrs, groups=groups, insufficient=[names[g] for g in np.flatnonzero(~keep)],
        disparities=[Disparity(metric=k, estimate=_num(v), ci_low=_num(ci[k][0]) if ci else None,
                               ci_high=_num(ci[k][1]) if ci else None, p_value=_num(ci[k][2]) if ci else None)
                     for k, v in point.items()])


def evaluate(counts: np.ndarray, encoder: GroupEncoder, *, min_group_size: int = 30, reps: int = 1000,
             confidence: float = 0.95, seed: int = 0, epoch: int | None = None, split: str = "eval"
             ) -> FairnessEval:
    """Every single-attribute view and, with several attributes, their intersection.

    ``counts`` has shape ``encoder.shape + (2, 2)``. Groups below ``min_group_size`` (including unobserved
    intersections, n = 0) are listed as insufficient and left out of the disparities, never dropped silently.
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(*encoder.shape, 2, 2)
    attrs = list(encoder.attributes)
    views = []
    for i, a in enumerate(attrs):
        marginal = counts.sum(axis=tuple(j for j in range(len(attrs)) if j != i))
        views.append(_view(marginal, [f"{a}={v}" for v in encoder.categories[a]], [a],
                           min_group_size=min_group_size, reps=reps, confidence=confidence, seed=seed))
    if len(attrs) > 1:
        names = [", ".join(f"{a}={encoder.categories[a][k]}" for a, k in zip(attrs, idx, strict=True))
                 for idx in np.ndindex(*encoder.shape)]
        views.append(_view(counts.reshape(-1, 2, 2), names, attrs, min_group_size=min_group_size, reps=reps,
                           confidence=confidence, seed=seed))
    return FairnessEval(epoch=epoch, split=split, rows=int(counts.sum()), min_group_size=min_group_size,
                        confidence=confidence, reps=reps, seed=seed, views=views, method=METHOD if reps else None)


def find_disparity(result: FairnessEval, view: str, metric: str) -> Disparity:
    for v in result.views:
        if view_name(v.attributes) == view:
            for d in v.disparities:
                if d.metric == metric:
                    return d
    raise InputError(f"no disparity {metric!r} in view {view!r}")
