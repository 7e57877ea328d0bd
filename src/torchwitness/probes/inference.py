"""Inference evidence: a serving wrapper that records each sampled batch as an ``inference`` record.

The caller's thread does only what must happen there: the forward itself, a softmax/max on the model's device,
two clock reads and one ``run.record`` (which copies the tensors asynchronously). Input fingerprints (keyed
HMACs of each row), the device-to-host copies and serialisation happen on the ledger's writer thread. Flagging
for human review (:class:`~torchwitness.controls.oversight.ReviewPolicy`) needs the confidences on the host, so
it runs only when a policy is set, once per batch.

Example::

    with tw.Run("runs/serve") as run:
        serve = InferenceRecorder(model, run, feature_names=names)
        probabilities = serve(batch)        # a drop-in for model(batch)
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch

from torchwitness.controls.oversight import ReviewPolicy, ReviewQueue
from torchwitness.errors import InputError, ServingStopped
from torchwitness.ledger.encoding import Fingerprint
from torchwitness.ledger.schema import register_kind


class InferenceRecord(msgspec.Struct):
    """``inference``: one served batch (or a sampled one)."""

    model: str  # sha256 of the weights served
    first_decision: int  # row i of the batch is decision "<run id>-<first_decision + i>"
    inputs: list[str]  # keyed fingerprints, one per row
    predictions: Any
    confidence: Any  # top-class probability x 10,000, rounded (integers serialise fast and exactly)
    latency_us: float
    batch: int
    retained: bool


register_kind("inference", InferenceRecord)


def decision_id(run_id: str, number: int) -> str:
    """The id of the ``number``-th decision served in run ``run_id``."""
    return f"{run_id}-{number}"


def model_digest(model: torch.nn.Module) -> str:
    """``sha256`` over parameter and buffer names, dtypes, shapes and bytes, in state-dict order."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


class RetainedInputs:
    """Raw input rows kept by decision id in ``RUN/private/inputs.sqlite`` (only with retention on; erasable)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.executescript("PRAGMA journal_mode = WAL; PRAGMA secure_delete = ON; CREATE TABLE IF NOT EXISTS "
                               "inputs (decision_id TEXT PRIMARY KEY, dtype TEXT, shape TEXT, data BLOB)")

    @classmethod
    def for_run(cls, run_dir: str | Path) -> RetainedInputs:
        return cls(Path(run_dir) / "private" / "inputs.sqlite")

    def put_many(self, ids: list[str], rows: np.ndarray) -> None:
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO inputs VALUES (?, ?, ?, ?)",
                             [(d, str(r.dtype), json.dumps(r.shape), r.tobytes()) for d, r in zip(ids, rows,
                                                                                               strict=True)])
        self._db.execute("COMMIT")

    def get(self, decision_id: str) -> np.ndarray:
        row = self._db.execute("SELECT dtype, shape, data FROM inputs WHERE decision_id = ?",
                               (decision_id,)).fetchone()
        if row is None:
            raise InputError(f"no retained input for decision {decision_id!r} (serve with retain_inputs=True, or "
                             "pass the input yourself)")
        return np.frombuffer(row[2], dtype=row[0]).reshape(json.loads(row[1]))

    def erase(self, decision_id: str) -> bool:
        return self._db.execute("DELETE FROM inputs WHERE decision_id = ?", (decision_id,)).rowcount > 0


class InferenceRecorder:
    """Wrap ``model`` for serving inside ``run``; calling it returns class probabilities.

    ``sample_every=k`` records every k-th batch (1 = all). ``retain_inputs=True`` keeps the raw rows in the
    run's private side store (erasable; needed to re-explain a decision later); by default only keyed
    fingerprints are kept. ``review`` routes flagged rows to a :class:`ReviewQueue` under ``policy``.
    """

    def __init__(self, model: torch.nn.Module, run: Any, *, sample_every: int = 1, retain_inputs: bool = False,
                 policy: ReviewPolicy | None = None, review: ReviewQueue | None = None,
                 poll_seconds: float = 0.2) -> None:
        if sample_every < 1:
            raise InputError("sample_every must be >= 1")
        self.model = model
        self.run = run
        self.sample_every = sample_every
        self.retain_inputs = retain_inputs
        self.policy = policy
        self.review = review if review is not None else (ReviewQueue.for_run(run.path) if policy else None)
        self.digest = model_digest(model)
        self._calls = 0
        self._next_id = 0
        self._poll = poll_seconds
        self._next_poll = 0.0
        self._rng = torch.Generator().manual_seed(policy.seed if policy else 0)
        self.drift_flag = False  # set by a drift monitor's caller to route the next batches to review
        self._inputs = RetainedInputs.for_run(run.path) if retain_inputs else None

    def _check_switch(self) -> None:
        now = time.monotonic()
        if self.review is None or now < self._next_poll:
            return
        self._next_poll = now + self._poll
        stopped, reason = self.review.stopped()
        if stopped:
            self.review.record_pending(self.run.record)
            raise ServingStopped(f"serving is stopped by a human reviewer: {reason or 'no reason given'}")

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        self._check_switch()
        start = time.perf_counter()
        with torch.inference_mode():
            probs = torch.softmax(self.model(inputs), dim=-1)
        latency_us = (time.perf_counter() - start) * 1e6
        n = inputs.shape[0]
        first = self._next_id
        self._next_id += n
        self._calls += 1
        if (self._calls - 1) % self.sample_every:
            return probs
        confidence, prediction = probs.max(dim=-1)
        self.run.record("inference", {"model": self.digest, "first_decision": first, "inputs": Fingerprint(inputs),
                                      "predictions": prediction,
                                      "confidence": (confidence * 10_000).round().to(torch.int16),
                                      "latency_us": round(latency_us, 1), "batch": n,
                                      "retained": self.retain_inputs})
        if self.retain_inputs or self.policy is not None:
            ids = [decision_id(self.run.run_id, first + i) for i in range(n)]
            if self.retain_inputs:
                self._inputs.put_many(ids, inputs.detach().cpu().numpy())
            if self.policy is not None:
                self._flag(ids, prediction, confidence)
        return probs

    def _flag(self, ids: list[str], prediction: torch.Tensor, confidence: torch.Tensor) -> None:
        policy = self.policy
        conf = confidence.detach().cpu().tolist()
        pred = prediction.detach().cpu().tolist()
        audit = (torch.rand(len(ids), generator=self._rng) < policy.audit_rate).tolist()
        rows = []
        for i, decision in enumerate(ids):
            reason = ("drift" if self.drift_flag and policy.on_drift else
                      "low_confidence" if conf[i] < policy.min_confidence else
                      "audit_sample" if audit[i] else None)
            if reason:
                rows.append((decision, reason, int(pred[i]), float(conf[i])))
        if rows:
            self.review.submit_many(rows)

    def close(self) -> None:
        """Record any reviewer decisions and stop/resume events still pending in the queue."""
        if self.review is not None:
            self.review.record_pending(self.run.record)
