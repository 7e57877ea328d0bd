"""Cross-rank rules (TW800-TW849): bugs that exist only between ranks of a distributed run.

They read the matrix :class:`~torchwitness.probes.distributed.CrossRank` gathers on audited steps
(``view.extra["ranks"]``, one row per rank). Every rank sees the same matrix; only rank 0 reports, so each
finding is recorded once, in rank 0's shard, naming the ranks involved.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from torchwitness.probes.distributed import COLUMNS
from torchwitness.rules.catalogue import Phase, Severity, rule
from torchwitness.rules.findings import Finding
from torchwitness.rules.training._registry import training_rule

_COL = {name: i for i, name in enumerate(COLUMNS)}
_OBLIGATIONS = ("EU-AI-Act:Art.15", "EU-AI-Act:Art.10(2)(f)")


def _matrix(view: Any) -> np.ndarray | None:
    m = view.extra.get("ranks")
    return m if m is not None and view.extra.get("rank", 0) == 0 else None


def _finding(rule_id: str, message: str, view: Any, ranks: list[int], **details: Any) -> Finding:
    f = Finding.of(rule_id, "model", message, step=view.step, details=details)
    f.ranks = tuple(sorted(ranks))
    return f


def _outliers(values: np.ndarray, rel: float) -> list[int]:
    """Ranks whose value differs from the most common one (beyond ``rel`` relative tolerance)."""
    ref = Counter(values.tolist()).most_common(1)[0][0]
    return [r for r, v in enumerate(values) if abs(v - ref) > rel * max(abs(ref), 1e-30)]


def _diverged(view: Any, rule_id: str, column: str, what: str) -> list[Finding]:
    m = _matrix(view)
    if m is None:
        return []
    ranks = _outliers(m[:, _COL[column]], 1e-6)
    if not ranks:
        return []
    return [_finding(rule_id, f"{what} on ranks {ranks} differ from the other ranks at step {view.step}", view,
                     ranks, checksums=m[:, _COL[column]].tolist())]


@training_rule("TW801", when="step", name="sampler-not-distributed", title="Several ranks trained on the same batch",
               severity=Severity.ERROR, phase=Phase.DISTRIBUTED, obligations=_OBLIGATIONS,
               remediation="Give the DataLoader a DistributedSampler (and call sampler.set_epoch(epoch) each "
                           "epoch), or shard the dataset by rank.")
def sampler_not_distributed(view: Any) -> list[Finding]:
    """Every rank fed an identical batch on the same step.

    Problem: without a ``DistributedSampler`` each rank iterates the whole dataset in the same order, so N ranks
    do the work of one and the effective batch is N copies of one batch. Fix: ``DataLoader(ds,
    sampler=DistributedSampler(ds))`` and ``sampler.set_epoch(epoch)``.
    """
    m = _matrix(view)
    if m is None:
        return []
    batch = m[:, _COL["batch"]]
    groups: dict[float, list[int]] = {}
    for rank, fp in enumerate(batch):
        if not math.isnan(fp):
            groups.setdefault(float(fp), []).append(rank)
    same = [ranks for ranks in groups.values() if len(ranks) > 1]
    if not same:
        return []
    ranks = sorted(r for g in same for r in g)
    return [_finding("TW801", f"ranks {ranks} trained on identical batches at step {view.step}", view, ranks)]


@training_rule("TW802", when="step", name="parameters-diverged", title="Parameters differ across ranks",
               severity=Severity.ERROR, phase=Phase.DISTRIBUTED, obligations=_OBLIGATIONS,
               remediation="Wrap every trained module in DistributedDataParallel (one DDP around the whole "
                           "model); do not update parameters outside the optimizer step; seed model "
                           "initialisation identically or let DDP broadcast it.")
def parameters_diverged(view: Any) -> list[Finding]:
    """Trainable parameters are no longer identical on all ranks (checksum of per-tensor norms).

    Under DDP every rank applies the same averaged gradient, so parameters stay bit-identical. A module kept
    outside DDP, a rank-dependent update or a skipped all-reduce makes replicas drift apart silently.
    """
    return _diverged(view, "TW802", "params", "parameters")


@training_rule("TW803", when="step", name="buffers-diverged", title="Buffers differ across ranks",
               severity=Severity.WARN, phase=Phase.DISTRIBUTED, obligations=_OBLIGATIONS,
               remediation="Keep DDP's broadcast_buffers=True, or convert BatchNorm with "
                           "torch.nn.SyncBatchNorm.convert_sync_batchnorm(model).")
def buffers_diverged(view: Any) -> list[Finding]:
    """Floating-point buffers (BatchNorm running statistics) differ across ranks.

    With ``broadcast_buffers=False`` (or a module outside DDP) each rank keeps its own running statistics, and
    the checkpoint saved by rank 0 evaluates differently from what the other ranks measured.
    """
    return _diverged(view, "TW803", "buffers", "buffers")


@training_rule("TW804", when="step", name="nonfinite-on-some-ranks", title="NaN/Inf on only some ranks",
               severity=Severity.ERROR, phase=Phase.DISTRIBUTED, obligations=_OBLIGATIONS,
               remediation="Inspect the named ranks' data shards and hardware; check inputs for NaN and the loss "
                           "for overflow on those ranks.")
def nonfinite_on_some_ranks(view: Any) -> list[Finding]:
    """Non-finite inputs or loss on a subset of ranks.

    One rank's bad shard or faulty device poisons the all-reduced gradient of every rank; naming the rank is the
    fastest route to the cause.
    """
    m = _matrix(view)
    if m is None:
        return []
    bad = [r for r, v in enumerate(m[:, _COL["nonfinite"]]) if v > 0]
    if not bad or len(bad) == len(m):
        return []
    return [_finding("TW804", f"non-finite inputs or loss on ranks {bad} only, at step {view.step}", view, bad)]


@training_rule("TW805", when="step", name="grad-norm-disagrees", title="Gradient norms disagree after all-reduce",
               severity=Severity.WARN, phase=Phase.DISTRIBUTED, obligations=_OBLIGATIONS,
               remediation="Make sure every parameter is reduced by DDP (no module outside the wrapper, no "
                           "no_sync() left on at the step) and that gradient clipping happens after the "
                           "all-reduce.")
def grad_norm_disagrees(view: Any) -> list[Finding]:
    """After DDP's all-reduce every rank holds the same gradient; different norms mean some were not reduced."""
    m = _matrix(view)
    if m is None or (m[:, _COL["nonfinite"]] > 0).any():
        return []
    ranks = _outliers(m[:, _COL["grad_norm"]], 1e-4)
    if not ranks:
        return []
    return [_finding("TW805", f"gradient norm on ranks {ranks} differs after all-reduce at step {view.step}",
                     view, ranks, norms=m[:, _COL["grad_norm"]].tolist())]


@rule("TW806", name="uneven-steps", title="Ranks ended with different step counts", severity=Severity.ERROR,
      phase=Phase.DISTRIBUTED, obligations=_OBLIGATIONS,
      remediation="Give every rank the same number of batches (DistributedSampler with drop_last, or "
                  "torch.distributed.algorithms.join.Join for uneven inputs).")
def uneven_steps(steps: dict[int, int]) -> list[Finding]:
    """Ranks took different numbers of optimizer steps (``train.steps`` of each shard): with DDP this hangs or
    silently drops work. Judged after the run, from the shards, by :func:`run_findings`."""
    if len(steps) < 2:
        return []
    values = np.asarray([steps[r] for r in sorted(steps)], dtype=np.float64)
    ranks = [sorted(steps)[i] for i in _outliers(values, 0.0)]
    if not ranks:
        return []
    f = Finding.of("TW806", "run", f"ranks ended after different step counts: {dict(sorted(steps.items()))}",
                   step=int(values.max()), details={"steps": {str(k): v for k, v in steps.items()}})
    f.ranks = tuple(ranks)
    return [f]
