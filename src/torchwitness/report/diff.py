"""Snapshot two runs and compare them: evaluation and training metrics (``eval`` and ``metrics`` records),
fairness, epsilon, findings, drift and certificates.

Each comparable quantity has a direction (higher or lower is better) and a tolerance from the policy; a change
beyond the tolerance in the wrong direction is a regression. A new ERROR finding is always a regression.

Policy file (JSON)::

    {"tolerance": {"default": 0.0, "metric:accuracy": 0.005, "train:": 0.01, "fairness:": 0.01}}

Keys are quantity names or prefixes of them; the longest matching key wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torchwitness.errors import InputError, RegressionError
from torchwitness.jsonfile import read_json
from torchwitness.report.evidence import Evidence, dicts, get, mapping, number, strings

Better = Literal["higher", "lower"]
Status = Literal["improved", "regressed", "unchanged", "added", "removed"]

DEFAULT_POLICY: dict[str, Any] = {"tolerance": {"default": 0.0, "metric:": 0.005, "train:": 0.01, "fairness:": 0.01,
                                                "privacy:": 0.01}}
# Metric names that are better lower (losses, errors); every other metric is read as better higher.
_LOWER = ("loss", "error", "err", "mse", "mae", "rmse", "perplexity", "ece", "brier", "wer", "cer")


@dataclass(frozen=True)
class Quantity:
    name: str
    value: float
    better: Better
    seq: int


@dataclass(frozen=True)
class Row:
    name: str
    a: float | None
    b: float | None
    better: Better
    tolerance: float
    status: Status
    seq_a: int | None
    seq_b: int | None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass
class RunDiff:
    rows: list[Row] = field(default_factory=list)

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.status == "regressed"]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.status] = out.get(r.status, 0) + 1
        return out


def snapshot(run_dir: str | Path) -> dict[str, Quantity]:
    """The comparable quantities of a run, by name."""
    ev = Evidence.load(run_dir)
    out: dict[str, Quantity] = {}

    def put(name: str, record: dict[str, Any] | None, path: str, better: Better) -> None:
        v = number(get(record, path)) if record else None
        if v is not None:
            out[name] = Quantity(name, v, better, record["seq"])  # type: ignore[index]

    # Declared performance: each metric of the latest evaluation per split ("metric:accuracy" on the test split).
    for r in ev.kind("eval"):
        split = get(r, "split")
        for name in mapping(get(r, "metrics")):
            key = f"metric:{name}" if split in (None, "test") else f"metric:{split}:{name}"
            put(key, r, f"metrics.{name}", direction(str(name)))
    # Training metrics: their last values (a resumed run's last session).
    for r in ev.kind("metrics"):
        for name in mapping(get(r, "metrics")):
            put(f"train:{name}", r, f"metrics.{name}", direction(str(name)))
    put("privacy:epsilon", ev.last("privacy.epsilon"), "epsilon", "lower")
    fair = ev.last("fairness.eval")
    for vi, view in dicts(get(fair, "views")) if fair else []:
        for di, d in dicts(view.get("disparities")):
            put(f"fairness:{d.get('metric')}({'&'.join(strings(view.get('attributes')))})", fair,
                f"views.{vi}.disparities.{di}.estimate", "lower")
    for f in ev.findings():
        sev = str(get(f, "severity"))
        if sev in ("error", "warn"):
            name = f"finding:{sev}:{get(f, 'rule_id')}@{get(f, 'location')}"
            out[name] = Quantity(name, 1.0, "lower", f["seq"])
    alerts = ev.kind("drift.alert")
    if alerts or ev.kind("drift.reference"):
        out["drift:alerts"] = Quantity("drift:alerts", float(len(alerts)), "lower",
                                       (alerts or ev.kind("drift.reference"))[-1]["seq"])
    for c in ev.kind("edit.certificate"):
        name = f"certificate:{get(c, 'edit')}:passed"
        out[name] = Quantity(name, 1.0 if get(c, "verdict") == "pass" else 0.0, "higher", c["seq"])
        delta = number(get(c, "metrics.accuracy_delta"))
        if delta is not None:
            out[f"certificate:{get(c, 'edit')}:accuracy_delta"] = Quantity(
                f"certificate:{get(c, 'edit')}:accuracy_delta", delta, "higher", c["seq"])
    return out


def direction(metric: str) -> Better:
    """The direction of a metric by its name: losses and errors are better lower, everything else higher."""
    words = metric.lower().replace("/", "_").replace(".", "_").replace("-", "_").split("_")
    return "lower" if any(w in _LOWER for w in words) else "higher"


def load_policy(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return DEFAULT_POLICY
    policy = read_json(path, "policy file")
    tol = policy.get("tolerance") if isinstance(policy, dict) else None
    if not isinstance(tol, dict) or not all(isinstance(v, int | float) and v >= 0 for v in tol.values()):
        raise InputError(f"policy {path} needs a 'tolerance' object of non-negative numbers")
    return policy


def _tolerance(policy: dict[str, Any], name: str) -> float:
    tol = policy["tolerance"]
    keys = [k for k in tol if k != "default" and name.startswith(k)]
    return float(tol[max(keys, key=len)]) if keys else float(tol.get("default", 0.0))


def compare(run_a: str | Path, run_b: str | Path, policy: dict[str, Any] | None = None) -> RunDiff:
    """Compare candidate ``run_b`` against baseline ``run_a``."""
    policy = policy or DEFAULT_POLICY
    qa, qb = snapshot(run_a), snapshot(run_b)
    diff = RunDiff()
    for name in sorted(qa.keys() | qb.keys()):
        a, b = qa.get(name), qb.get(name)
        q = b or a
        assert q is not None
        tol = _tolerance(policy, name)
        status: Status
        if name.startswith("finding:"):
            # A finding present only in the candidate is a new problem; only in the baseline, a fixed one.
            status = "unchanged" if a and b else "regressed" if b and ":error:" in name else "added" if b \
                else "improved"
            va, vb = (1.0 if a else 0.0), (1.0 if b else 0.0)
        elif a is None or b is None:
            status, va, vb = ("added" if b else "removed"), (a.value if a else None), (b.value if b else None)
        else:
            va, vb = a.value, b.value
            gain = (vb - va) if q.better == "higher" else (va - vb)
            status = "regressed" if gain < -tol - 1e-12 else "improved" if gain > tol + 1e-12 else "unchanged"
        diff.rows.append(Row(name, va, vb, q.better, tol, status, a.seq if a else None, b.seq if b else None))
    return diff


def assert_no_regression(run_a: str | Path, run_b: str | Path, *, policy: str | Path | dict[str, Any] | None = None
                         ) -> RunDiff:
    """Raise :class:`RegressionError` if ``run_b`` regresses from ``run_a``; return the diff otherwise.

    Example (in a CI test)::

        from torchwitness.report.diff import assert_no_regression
        assert_no_regression("runs/main", "runs/candidate", policy="policy.json")
    """
    pol = policy if isinstance(policy, dict) else load_policy(policy)
    diff = compare(run_a, run_b, pol)
    bad = diff.regressions
    if bad:
        raise RegressionError(f"{len(bad)} regression(s): " + "; ".join(
            f"{r.name} {r.a} -> {r.b}" for r in bad[:5]) + (" …" if len(bad) > 5 else ""))
    return diff
