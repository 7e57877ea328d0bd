"""Inference evidence: a serving wrapper that records served requests in ``inference`` records.

The caller's thread does only what must happen there: the forward, two clock reads, a list append and, for a
request whose input is sampled (all of them by default), the request's keyed commitment. Committing at the door
(one HMAC-SHA256 call over the request's bytes, an OpenSSL call that releases the GIL while it hashes) means
nothing the caller does to its tensor afterwards can change what was committed; copying the request and hashing
it on the writer thread instead was measured and was no faster, because each hash there hands the GIL back and
forth with the serving thread. Inputs on an accelerator are copied (asynchronously) and committed on the writer
thread, so serving never waits for the device.
Every ``window`` requests (or ``window_seconds``, or on :meth:`InferenceRecorder.flush` / run close) the pending
requests become one record: one concatenation and one top-class reduction for the whole window, handed to the
ledger without a further copy. Flagging for human review (:class:`~torchwitness.controls.oversight.ReviewPolicy`)
reads the window's confidences on the host, so it runs once per window.

Example::

    with tw.Run("runs/serve") as run:
        serve = run.serve(model)            # an InferenceRecorder
        probabilities = serve(batch)        # a drop-in for softmax(model(batch))
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import torch

from torchwitness.controls.oversight import ReviewPolicy, ReviewQueue
from torchwitness.errors import InputError, ServingStopped
from torchwitness.ledger.encoding import Fingerprint, Packed, fingerprint_buffers
from torchwitness.ledger.schema import register_kind

FingerprintGranularity = Literal["request", "row", "none"]


class InferenceRecord(msgspec.Struct):
    """``inference``: a window of served requests (each a call to the recorder, holding one or more rows)."""

    model: str  # sha256 of the weights served
    first_decisions: list[int]  # request i's row j is decision "<run id>-<first_decisions[i] + j>"
    rows: list[int]  # rows per request
    latency_us: list[int]  # forward latency per request, rounded to whole microseconds
    fingerprint: str  # "request": inputs holds one commitment per committed request; "row": one per row of
    # those; "none": inputs are not committed
    committed: list[int]  # the requests (indices into first_decisions) whose inputs are committed, in order
    inputs: list[str]  # keyed commitments (hmac-sha256-128), never the values
    predictions: Any  # top class per row, requests in order (a packed uint8/int16/int32 $array, the narrowest
    # that holds the model's classes: see decode_array); null when outputs are not recorded
    confidence: Any  # top-class probability x 10,000, rounded, per row (a packed int16 $array); or null
    retained: bool


register_kind("inference", InferenceRecord)


def _class_dtype(classes: int) -> torch.dtype:
    # The window's predictions are most of a record's bytes, and every byte is base64-encoded and hashed by the
    # writer thread while the serving thread waits for the GIL.
    return torch.uint8 if classes <= 256 else torch.int16 if classes <= 32768 else torch.int32


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

    Each call is one request of one or more rows; row ``j`` of a request gets the decision id
    ``<run id>-<n>``, numbered across the run. Options:

    - ``sample_every=k`` commits (and retains) the input of every k-th request; every request's decisions are
      recorded all the same (latency, prediction, confidence). 1 (the default) commits every input; a larger k
      trades input evidence for speed on models whose forward costs little more than hashing the request.
    - ``window`` / ``window_seconds``: pending requests become one ``inference`` record after this many requests
      or this many seconds, whichever comes first (the age is checked when a request arrives; an idle server's
      open window is recorded on :meth:`flush` or when the run closes).
    - ``fingerprint``: ``"request"`` (default) stores one keyed commitment per request, ``"row"`` one per row
      (lets the key holder match single rows across requests, at about 2 us per row on the writer thread),
      ``"none"`` no input evidence at all.
    - ``outputs``: ``True`` (default) records each row's top class and confidence; ``False`` leaves them out of
      the ledger (a prediction about a person can itself be personal data). A review ``policy`` still sees them.
      With ``fingerprint="none"`` and ``outputs=False`` a record is a bare log of use: decision ids, rows,
      latencies and the model digest.
    - ``copy_inputs``: inputs committed later (on an accelerator, or per row) are copied first; ``False`` skips
      the copy, only for callers that never modify a tensor after serving it.
    - ``retain_inputs=True`` keeps the raw rows in the run's private side store (erasable; needed to re-explain
      a decision later); by default only keyed commitments are kept.
    - ``policy`` routes flagged rows to a :class:`ReviewQueue` (``review``, or the run's own queue).
    """

    def __init__(self, model: torch.nn.Module, run: Any, *, sample_every: int = 1, window: int = 256,
                 window_seconds: float = 1.0, fingerprint: FingerprintGranularity = "request", outputs: bool = True,
                 copy_inputs: bool = True, retain_inputs: bool = False, policy: ReviewPolicy | None = None,
                 review: ReviewQueue | None = None, poll_seconds: float = 0.2) -> None:
        if sample_every < 1:
            raise InputError("sample_every must be >= 1")
        if window < 1 or window_seconds <= 0:
            raise InputError("window must be >= 1 request and window_seconds > 0")
        if fingerprint not in ("request", "row", "none"):
            raise InputError(f"fingerprint must be 'request', 'row' or 'none', not {fingerprint!r}")
        self.model = model
        self.run = run
        self.sample_every = sample_every
        self.window = window
        self.window_seconds = window_seconds
        self.fingerprint = fingerprint
        self.outputs = outputs
        self.copy_inputs = copy_inputs
        self.retain_inputs = retain_inputs
        self.policy = policy
        self.review = review if review is not None else (ReviewQueue.for_run(run.path) if policy else None)
        self.digest = model_digest(model)
        self._commit = run.ledger.personal.fingerprint
        self._calls = 0
        self._next_id = 0
        self._poll = poll_seconds
        self._next_poll = 0.0
        self._rng = torch.Generator().manual_seed(policy.seed if policy else 0)
        self.drift_flag = False  # set by a drift monitor's caller to route the next requests to review
        self._inputs = RetainedInputs.for_run(run.path) if retain_inputs else None
        # Per request not yet recorded: first decision, rows, whether its input is sampled, its commitment if made
        # at the door, the input (kept when committed later or retained) or None, probabilities (None when nothing
        # reads them), latency in s, drift flag.
        self._pending: list[tuple[int, int, bool, str | None, torch.Tensor | None, torch.Tensor | None, float,
                                  bool]] = []
        self._door: bool | None = None  # how the open window's inputs are committed: at the door or on the writer
        self._opened = 0.0
        run.on_close(self.close)

    def _check_switch(self) -> None:
        now = time.monotonic()
        if now < self._next_poll:
            return
        self._next_poll = now + self._poll
        stopped, reason = self.review.stopped()
        if stopped:
            self.flush()
            self.review.record_pending(self.run.record)
            raise ServingStopped(f"serving is stopped by a human reviewer: {reason or 'no reason given'}")

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.review is not None:
            self._check_switch()
        first = self._next_id
        self._next_id += inputs.shape[0]
        self._calls += 1
        sampled = self.sample_every == 1 or (self._calls - 1) % self.sample_every == 0
        start = time.perf_counter()
        with torch.inference_mode():
            probs = torch.softmax(self.model(inputs), dim=-1)
            latency = time.perf_counter() - start
            commitment = kept = None
            if sampled:
                committing = self.fingerprint != "none"
                at_door = self.fingerprint == "request" and inputs.is_cpu
                if committing:
                    if self._door is not None and self._door != at_door:
                        self.flush()  # a window holds commitments made one way only
                    self._door = at_door
                if (committing and not at_door) or self.retain_inputs:
                    kept = inputs.clone() if self.copy_inputs else inputs
                if committing and at_door:
                    commitment = self._commit(fingerprint_buffers([inputs.detach()])[0])
            pending = self._pending
            if not pending:
                self._opened = start
            pending.append((first, inputs.shape[0], sampled, commitment, kept,
                            probs if self.outputs or self.policy is not None else None, latency, self.drift_flag))
        if len(pending) >= self.window or start - self._opened >= self.window_seconds:
            self.flush()
        return probs

    def flush(self) -> None:
        """Record the pending requests now (one ``inference`` record) and route their flagged rows to review."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        door, self._door = self._door, None
        rows = [p[1] for p in pending]
        sampled = [i for i, p in enumerate(pending) if p[2]]
        confidence = prediction = None
        with torch.inference_mode():
            if pending[0][5] is not None:
                confidence, prediction = torch.cat([p[5] for p in pending]).max(dim=-1)
            kept = [p[4] for p in pending if p[4] is not None]
            batch = torch.cat(kept) if kept and (self.fingerprint == "row" or self.retain_inputs) else None
        if door:
            inputs: Any = [p[3] for p in pending if p[2]]
        elif self.fingerprint == "none" or not kept:
            inputs = []
        else:
            inputs = Fingerprint(batch if self.fingerprint == "row" else kept)
        self.run.record("inference", {
            "model": self.digest, "first_decisions": [p[0] for p in pending], "rows": rows,
            "latency_us": np.rint(np.array([p[6] for p in pending]) * 1e6).astype(np.int64).tolist(),
            "fingerprint": self.fingerprint, "committed": sampled if self.fingerprint != "none" else [],
            "inputs": inputs,
            "predictions": Packed(prediction.to(_class_dtype(pending[0][5].shape[-1]))) if self.outputs else None,
            "confidence": Packed((confidence * 10_000).round().to(torch.int16)) if self.outputs else None,
            "retained": self.retain_inputs}, copy=False)
        if self._inputs is None and self.policy is None:
            return
        run_id = self.run.run_id
        if self._inputs is not None and batch is not None:
            self._inputs.put_many([decision_id(run_id, pending[i][0] + j) for i in sampled for j in range(rows[i])],
                                  batch.detach().cpu().numpy())
        if self.policy is not None:
            ids = [decision_id(run_id, p[0] + j) for p, n in zip(pending, rows, strict=True) for j in range(n)]
            drift = [p[7] for p, n in zip(pending, rows, strict=True) for _ in range(n)]
            self._flag(ids, prediction, confidence, drift)

    def _flag(self, ids: list[str], prediction: torch.Tensor, confidence: torch.Tensor, drift: list[bool]) -> None:
        policy = self.policy
        conf = confidence.detach().cpu().tolist()
        pred = prediction.detach().cpu().tolist()
        audit = (torch.rand(len(ids), generator=self._rng) < policy.audit_rate).tolist()
        rows = []
        for i, decision in enumerate(ids):
            reason = ("drift" if drift[i] and policy.on_drift else
                      "low_confidence" if conf[i] < policy.min_confidence else
                      "audit_sample" if audit[i] else None)
            if reason:
                rows.append((decision, reason, int(pred[i]), float(conf[i])))
        if rows:
            self.review.submit_many(rows)

    def close(self) -> None:
        """Record pending requests, then any reviewer decisions and stop/resume events still in the queue.

        Called by the run when it closes; calling it earlier is harmless.
        """
        self.flush()
        if self.review is not None:
            self.review.record_pending(self.run.record)
