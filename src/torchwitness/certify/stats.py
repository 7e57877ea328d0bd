"""From committed per-window rows to every reported statistic, and from those to the verdict.

The same functions run when certifying and when ``verify-cert`` re-checks a certificate, so a verifier
recomputes exactly what the certifier reported (the bootstrap seed is part of the policy).

Interval metrics are ratios of per-window sums (see :mod:`.bootstrap`); each gated one is a one-sided
non-inferiority test ``H0: metric beyond margin`` whose p-value comes from inverting its BCa bound, and Holm's
step-down procedure keeps the familywise error at the policy's ``alpha``. Tail percentiles are point checks.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from torchwitness.certify.bootstrap import ratio_bootstrap
from torchwitness.certify.policy import Policy
from torchwitness.errors import InputError
from torchwitness.ledger.encoding import decode_float


@dataclass(frozen=True)
class MetricDef:
    name: str
    numerator: str  # column name, or "a-b" for a difference of two columns
    denominator: str
    side: str  # "upper": smaller is better; "lower": larger is better
    log_scale: bool = False  # reported as exp(theta); margins are compared on the log scale


LM_METRICS = (
    MetricDef("ppl_ratio", "nll_subject-nll_baseline", "tokens", "upper", log_scale=True),
    MetricDef("kl", "kl", "tokens", "upper"),
    MetricDef("top1_agreement", "agree", "tokens", "lower"),
)
CLASSIFIER_METRICS = (
    MetricDef("accuracy_delta", "correct_subject-correct_baseline", "examples", "lower"),
    MetricDef("prediction_agreement", "agree", "examples", "lower"),
)
TAILS = {"delta_p95": 95.0, "delta_p99": 99.0}


def delta_tokens(row: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(row["delta"]), dtype="<f4")


def _column(rows: list[dict], expr: str) -> np.ndarray:
    if "-" in expr:
        a, b = expr.split("-")
        return _column(rows, a) - _column(rows, b)
    return np.array([decode_float(r[expr]) for r in rows], dtype=np.float64)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (binomial, p = 1/2).

    >>> round(mcnemar_exact(10, 2), 4)
    0.0386
    """
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
                 for i in range(k + 1)]
    return min(1.0, 2 * math.fsum(math.exp(t) for t in log_terms))


def holm(p_values: dict[str, float], alpha: float) -> dict[str, bool]:
    """Holm's step-down: which hypotheses are rejected at familywise level ``alpha``.

    >>> holm({"a": 0.01, "b": 0.04, "c": 0.03}, 0.05)
    {'a': True, 'c': False, 'b': False}
    """
    p_values = {k: (v if v == v else 1.0) for k, v in p_values.items()}  # NaN never rejects
    order = sorted(p_values, key=lambda k: (p_values[k], k))
    m = len(order)
    out: dict[str, bool] = {}
    rejecting = True
    for i, name in enumerate(order):
        rejecting = rejecting and p_values[name] <= alpha / (m - i)
        out[name] = rejecting
    return out


def compute_statistics(task: str, rows: list[dict[str, Any]], policy: Policy) -> dict[str, Any]:
    """Every metric with its interval, bound, p-value and margin, computed from the per-window rows."""
    if task not in ("causal-lm", "classifier"):
        raise InputError(f"unknown task {task!r}")
    if len(rows) < 2:
        raise InputError("certification needs at least two windows")
    defs = LM_METRICS if task == "causal-lm" else CLASSIFIER_METRICS
    num = np.stack([_column(rows, d.numerator) for d in defs], axis=1)
    den = np.stack([_column(rows, d.denominator) for d in defs], axis=1)
    boot = ratio_bootstrap(num, den, replicates=policy.replicates, seed=policy.seed)
    metrics: dict[str, Any] = {}
    for j, d in enumerate(defs):
        lo, hi, se_lo, se_hi = boot.interval(j, policy.confidence)
        est = float(boot.estimate[j])
        entry = {"estimate": est, "interval": [lo, hi], "mc_error": [se_lo, se_hi], "side": d.side,
                 "scale": "log" if d.log_scale else "linear"}
        margin = policy.metrics.get(d.name)
        if margin is not None:
            limit = margin.max if d.side == "upper" else margin.min
            if limit is None:
                raise InputError(f"policy margin of {d.name} must be a {'max' if d.side == 'upper' else 'min'}")
            m = math.log(limit) if d.log_scale else limit
            entry.update(margin=limit, gate=margin.gate, p_value=boot.p_value(j, m, d.side),
                         bound=boot.bound(j, 1 - policy.alpha, d.side))
        if d.log_scale:  # report on the ratio scale; BCa intervals are transformation-respecting
            entry.update(estimate=math.exp(est), interval=[math.exp(lo), math.exp(hi)],
                         mc_error=[math.exp(lo) * se_lo, math.exp(hi) * se_hi])
            if "bound" in entry:
                entry["bound"] = math.exp(entry["bound"])
        metrics[d.name] = entry
    totals = {"windows": len(rows), "tokens": int(den[:, 0].sum())}
    if task == "causal-lm":
        deltas = np.concatenate([delta_tokens(r) for r in rows]).astype(np.float64)
        for name, q in TAILS.items():
            entry = {"estimate": float(np.percentile(deltas, q)), "side": "upper", "scale": "point"}
            margin = policy.metrics.get(name)
            if margin is not None and margin.max is not None:
                entry.update(margin=margin.max, gate=margin.gate)
            metrics[name] = entry
        nll_b, nll_s = _column(rows, "nll_baseline").sum(), _column(rows, "nll_subject").sum()
        totals.update(baseline_ppl=math.exp(nll_b / totals["tokens"]), subject_ppl=math.exp(nll_s / totals["tokens"]))
    else:
        b, c = int(_column(rows, "baseline_only").sum()), int(_column(rows, "subject_only").sum())
        totals.update(baseline_accuracy=float(_column(rows, "correct_baseline").sum() / totals["tokens"]),
                      subject_accuracy=float(_column(rows, "correct_subject").sum() / totals["tokens"]))
        metrics["mcnemar"] = {"baseline_only": b, "subject_only": c, "p_value": mcnemar_exact(b, c),
                              "side": "two-sided", "scale": "test"}
    return {"totals": totals, "metrics": metrics, "bootstrap": {
        "method": "window-cluster BCa", "replicates": policy.replicates, "seed": policy.seed,
        "confidence": policy.confidence, "mc_error": "sd of each end over 200 resamples of the replicates"}}


def decide(stats: dict[str, Any], policy: Policy, *, invariants: list[str],
           diagnostic_failures: list[str]) -> tuple[str, list[str], dict[str, bool]]:
    """The verdict (``pass``/``fail``), the reasons behind it and which gated tests Holm rejected."""
    reasons: list[str] = []
    totals, metrics = stats["totals"], stats["metrics"]
    if totals["windows"] < policy.min_windows:
        reasons.append(f"insufficient evidence: {totals['windows']} windows < {policy.min_windows} required")
    if totals["tokens"] < policy.min_tokens:
        reasons.append(f"insufficient evidence: {totals['tokens']} tokens < {policy.min_tokens} required")
    reasons += [f"invariant: {v}" for v in invariants]
    tested = {k: v["p_value"] for k, v in metrics.items() if v.get("gate") and "p_value" in v}
    rejected = holm(tested, policy.alpha)
    for name, ok in rejected.items():
        if not ok:
            m = metrics[name]
            rel = "<" if m["side"] == "upper" else ">"
            est, lo, hi = (decode_float(v) for v in (m["estimate"], *m["interval"]))  # NaN arrives tagged
            reasons.append(f"{name}: non-inferiority not shown ({name} {rel} {m['margin']:g}; estimate "
                           f"{est:.6g}, {policy.confidence:.0%} interval [{lo:.6g}, {hi:.6g}], Holm-adjusted "
                           f"test at alpha {policy.alpha:g}, p = {m['p_value']:.3g})")
    for name in TAILS:
        m = metrics.get(name)
        if m and m.get("gate") and not decode_float(m["estimate"]) <= m["margin"]:
            reasons.append(f"{name}: {decode_float(m['estimate']):.4g} exceeds {m['margin']:g}")
    if policy.diagnostics.gate:
        reasons += [f"diagnostic: {d}" for d in diagnostic_failures]
    return ("fail" if reasons else "pass"), reasons, rejected
