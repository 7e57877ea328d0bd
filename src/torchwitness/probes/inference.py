"""Inference evidence: a serving wrapper that records served requests in ``inference`` records.

Every request is recorded; the caller's thread does only what must happen there. On the common path that is the
forward, two clock reads and, under the recorder's lock (callers may serve from several threads), three list
appends (latency, rows, the output tensor): a window's columns are lists of numbers, not an object per request.
Rarer work waits for the request that needs it: every 16th concatenates the held outputs (each live tensor slows
the serving loop, measured), and a sampled request's input is committed at the door (one HMAC-SHA256 call, which
releases the GIL while it hashes: nothing the caller does to its tensor afterwards can change what was
committed). A small thread closes a window that has reached its age, so an idle server's requests are recorded
too. Inputs on an accelerator, rows to fingerprint one by one and retained inputs are copied instead and
finished on the writer thread, so serving never waits for the device.
Every ``window`` requests (or ``window_seconds``, or on :meth:`InferenceRecorder.flush` / run close) the pending
requests become one record: columns packed as arrays, handed to the ledger without a further copy, and the
top-class reduction over the window's outputs runs on the writer thread
(:class:`~torchwitness.ledger.encoding.Computed`; on the serving thread for outputs on an accelerator, whose
stream orders it after the forwards, or with a review policy). Flagging for human review
(:class:`~torchwitness.controls.oversight.ReviewPolicy`) reads the window's confidences on the host, so it runs
once per window, on the thread that closes it.

Example::

    with tw.Run("runs/serve") as run:
        serve = run.serve(model)            # an InferenceRecorder
        probabilities = serve(batch)        # a drop-in for softmax(model(batch))
        probabilities, ids = serve(batch, ids=True)   # and each row's decision id
"""
from __future__ import annotations

import datetime as dt
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from itertools import accumulate
from typing import Any, Literal, overload

import numpy as np
import torch

from torchwitness.controls.oversight import ReviewPolicy, ReviewQueue
from torchwitness.errors import FailureWarnings, InputError, ServingStopped
from torchwitness.ledger.encoding import Computed, Fingerprint, Packed, fingerprint_buffers
from torchwitness.ledger.writer import now_us
from torchwitness.probes.inference_records import (
    InferenceRecord,
    ServeStartRecord,
    _outputs_value,
    _top_class,
    model_digest,
    request_bytes,
    shape_error,
    verified_input,
    window_columns,
)
from torchwitness.probes.retained import RetainedInputs, decision_id, expire_inputs, parse_decision_id
from torchwitness.probes.serve_review import explain_rows, flag_rows

# The recorder's module was one with its records; their names stay importable from here.
__all__ = ["FingerprintGranularity", "InferenceRecord", "InferenceRecorder", "RetainedInputs", "ServeStartRecord",
           "decision_id", "model_digest", "parse_decision_id", "verified_input", "window_columns"]

FingerprintGranularity = Literal["request", "row", "none"]
_FOLD = 16  # served outputs held singly before one concatenation (see InferenceRecorder._fold)
_KEPT_BYTES = 64 << 20  # inputs held for the writer thread or retention: a window ends early beyond this
_REVIEW_SECONDS = 1.0  # how often reviewers' decisions and stop/resume events are brought into the ledger
_EXPIRY_SECONDS = 60.0  # how often retained inputs past their retention period are deleted


class InferenceRecorder:
    """Wrap ``model`` for serving inside ``run``; calling it returns class probabilities.

    Each call is one request of one or more rows; each row is a decision with the id
    ``<run id>-<stream>-<n>`` (:meth:`decision_id`), numbered from 0 in serving order within the recorder's own
    stream, which its ``serve.start`` record names. Every request is recorded (latency, rows, each row's prediction
    and confidence); options choose what else:

    - ``sample_every=k`` commits (and retains) the input of every k-th request, starting with the first. The
      default, 1, commits every input, so the input of any single decision can be proved later. A commitment
      hashes every byte of the request (~15 us for the demo model's 13 KB batch inside a serving loop here, 40 %
      of its forward); for models whose forward costs little more than that, a larger k divides the
      cost by k.
    - ``window`` / ``window_seconds``: pending requests become one ``inference`` record after this many requests
      or, at the latest, 1.25 x this many seconds after the window's first request, whichever comes first (a
      thread of the recorder looks at the window's age four times per ``window_seconds``, so an idle server's
      requests are recorded too; :meth:`flush` and the run's close record them at once).
    - ``fingerprint``: ``"request"`` (default) stores one keyed commitment per committed request, ``"row"`` one
      per row (lets the key holder match single rows across requests), ``"none"`` no input evidence at all.
    - ``outputs``: ``True`` (default) records each row's top class and confidence; ``False`` leaves them out of
      the ledger (a prediction about a person can itself be personal data). A review ``policy`` still sees them.
      With ``fingerprint="none"`` and ``outputs=False`` a record is a bare log of use: decision numbers, rows,
      latencies and the model digest.
    - ``copy_inputs``: inputs held until their window is recorded (rows to fingerprint one by one, inputs on an
      accelerator, retained inputs) are copied when served; ``False`` skips the copy, only for callers that never
      modify a tensor after serving it. A CPU request committed whole is hashed when served and never held.
    - ``retain_inputs=True`` keeps the raw rows of committed requests in the run's private side store (erasable;
      needed to re-explain a decision later); by default only keyed commitments are kept. ``retain_seconds`` (or a
      ``timedelta``) keeps each no longer than that: the recorder deletes expired rows every minute and records
      how many (``inputs.expiry``; ``torchwitness expire`` does the same for a run no longer served).
    - ``policy`` routes flagged rows to a :class:`ReviewQueue` (``review``, or the run's own queue).
    - ``forward(model, request)`` returns the logits when calling the model on the request is not all it takes,
      e.g. ``lambda model, batch: model(**batch).logits`` for a Hugging Face classifier served tokenizer output.
      A request may then be a mapping of named tensors (committed as each tensor's bytes in sorted-name order) or
      a sequence of tensors (in order); ``fingerprint="row"`` and ``retain_inputs`` need a tensor of rows.

    A request's rows are the rows of the model's output, ``[rows, classes]`` (one decision each); an output of
    another shape (an unbatched input's ``[classes]``, per-token ``[rows, tokens, classes]``) is refused with
    :class:`~torchwitness.errors.InputError` saying what to serve instead, and nothing is recorded for it.
    """

    def __init__(self, model: torch.nn.Module, run: Any, *, sample_every: int = 1, window: int = 4096,
                 window_seconds: float = 1.0, fingerprint: FingerprintGranularity = "request", outputs: bool = True,
                 copy_inputs: bool = True, retain_inputs: bool = False,
                 retain_seconds: float | dt.timedelta | None = None, policy: ReviewPolicy | None = None,
                 review: ReviewQueue | None = None, poll_seconds: float = 0.2,
                 forward: Callable[[torch.nn.Module, Any], torch.Tensor] | None = None) -> None:
        if sample_every < 1:
            raise InputError("sample_every must be >= 1")
        if window < 1 or window_seconds <= 0:
            raise InputError("window must be >= 1 request and window_seconds > 0")
        if fingerprint not in ("request", "row", "none"):
            raise InputError(f"fingerprint must be 'request', 'row' or 'none', not {fingerprint!r}")
        if isinstance(retain_seconds, dt.timedelta):
            retain_seconds = retain_seconds.total_seconds()
        if retain_seconds is not None and (not retain_inputs or retain_seconds <= 0):
            raise InputError("retain_seconds is how long retained inputs are kept: it needs retain_inputs=True and "
                             f"a positive period, not {retain_seconds!r}")
        self.model = model
        # Bound once, so a custom forward costs the serving path nothing over calling the model itself.
        self._forward: Callable[[Any], torch.Tensor] = model if forward is None else partial(forward, model)
        self.run = run
        self.sample_every = sample_every
        self.window = window
        self.window_seconds = window_seconds
        self.fingerprint = fingerprint
        self.outputs = outputs
        self.copy_inputs = copy_inputs
        self.retain_inputs = retain_inputs
        self.retain_seconds = None if retain_seconds is None else float(retain_seconds)
        self.policy = policy
        self.review = review if review is not None else (ReviewQueue.for_run(run.path) if policy else None)
        self.digest = model_digest(model)
        self._commit = run.ledger.personal.fingerprint
        # Every request committed whole at the door (the default): the commitment is made before the lock and
        # is no event of the window (see __call__), so the common path stays a few list appends.
        self._door_all = sample_every == 1 and fingerprint == "request" and not retain_inputs
        self._keep_outputs = outputs or policy is not None
        self._keep_inputs = fingerprint != "none" or retain_inputs
        self._poll = poll_seconds
        self._next_poll = 0.0
        self._rng = torch.Generator().manual_seed(policy.seed if policy else 0)
        self.drift_flag = False  # set by a drift monitor's caller to route the next requests to review
        self._inputs = RetainedInputs.for_run(run.path) if retain_inputs else None
        self._explainer: Any = None
        if policy is not None and policy.explain:
            if not retain_inputs:
                raise InputError("explaining flagged requests (ReviewPolicy.explain) needs their inputs: serve with "
                                 "retain_inputs=True")
            from torchwitness.integrations.captum import ExplanationWorker

            self._explainer = ExplanationWorker(model, run, feature_names=policy.feature_names or None)
        # The open window, one column per field: a request appends numbers to lists and makes no object of its own.
        self._first = 0  # the window's first decision number
        self._served = 0  # requests recorded before the window
        self._deadline = math.inf  # when the open window is due, by age (window_seconds after its first request)
        self._rows: list[int] = []
        self._latency: list[float] = []  # seconds
        self._outputs: list[torch.Tensor] = []  # probabilities, concatenated every _FOLD requests
        self._folded: list[torch.Tensor] = []
        self._committed: list[int] = []  # requests (window indices) whose inputs are committed and retained
        self._commitments: list[str | torch.Tensor] = []  # per committed request: its commitment, or its input
        # when committed on the writer thread
        self._kept: list[torch.Tensor] = []  # inputs held until the window is recorded (rows, retention, devices)
        self._kept_bytes = 0
        self._drifted: list[int] = []  # requests served while drift_flag was set
        self._grouped: list[tuple[int, list[str]]] = []  # (request, its rows' group labels), when given
        self._due = 1  # requests until the next one that needs more than the common path (see _event)
        self._counted = self._upto = 0  # rows of the window's first _upto requests (see _numbered)
        self._lock = threading.Lock()  # the open window's columns, between serving threads and the age thread
        seq = run.record("serve.start", {
            "model": self.digest, "sample_every": sample_every, "window": window, "window_seconds": window_seconds,
            "fingerprint": fingerprint, "outputs": outputs, "retain_inputs": retain_inputs,
            "retain_seconds": self.retain_seconds,
            "policy": policy.to_dict() if policy is not None else None})
        # A dropped start record (a full queue under on_full="drop") leaves no sequence number to name the stream.
        serial = str(seq) if seq is not None else uuid.uuid4().hex[:12]
        self.stream = serial if run.world_size == 1 else f"{run.rank}.{serial}"
        run.on_close(self.close)
        # The ageing thread records reviewers' decisions through a connection of its own: the serving thread
        # polls the stop switch through the recorder's, and would otherwise wait while a backlog is recorded.
        # An in-memory queue has no second connection to open: both threads share it, under its lock.
        self._ager_reviews = None if self.review is None else (
            self.review if str(self.review.path) == ":memory:" else ReviewQueue(self.review.path))
        self._closing = threading.Event()
        self._ager = threading.Thread(target=self._close_aged_windows, name="torchwitness-serve-windows", daemon=True)
        self._ager.start()

    def decision_id(self, number: int) -> str:
        """The id of this recorder's ``number``-th decision (its rows are numbered from 0 in serving order)."""
        return decision_id(self.run.run_id, self.stream, number)

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

    @overload
    def __call__(self, inputs: Any, ids: Literal[False] = False,
                 groups: Sequence[str] | None = None) -> torch.Tensor: ...

    @overload
    def __call__(self, inputs: Any, ids: Literal[True],
                 groups: Sequence[str] | None = None) -> tuple[torch.Tensor, list[str]]: ...

    def __call__(self, inputs: Any, ids: bool = False,
                 groups: Sequence[str] | None = None) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """Serve one request: the class probabilities of its rows, and with ``ids=True`` their decision ids too.

        A server that answers each request with its decision ids lets a person name the decision they contest
        (GDPR Art. 22(3)) and a reviewer find it; under several serving threads this is the only way to learn
        them, since the numbers follow the order in which requests are recorded.

        ``groups`` labels each row with its group (``"sex=Female"``, the names datasheets and fairness reports
        use) for a review policy's ``sensitive_groups``: a row of such a group goes to review. The labels are
        used for flagging only and never recorded; the review queue holds the reason, ``sensitive_group``.
        """
        # The common path is a handful of list appends: at ~36 us per forward of a small model, every attribute
        # read here is a tenth of a percent. Everything else waits for the next request that needs it (_event).
        if self.review is not None:
            self._check_switch()
        start = time.perf_counter()
        with torch.inference_mode():
            probs = torch.softmax(self._forward(inputs), dim=-1)
        latency = time.perf_counter() - start
        try:
            rows, _ = probs.shape  # one decision per row: a request's output is [rows, classes]
        except ValueError:
            raise InputError(shape_error(probs)) from None
        if groups is not None:
            groups = self._checked_groups(groups, rows)
        commitment = self._at_door(inputs) if self._door_all else None
        self._lock.acquire()  # not a with block: half the cost on a path measured in tenths of a microsecond
        try:
            self._latency.append(latency)
            self._rows.append(rows)
            if self._keep_outputs:
                self._outputs.append(probs)
            first = self._numbered() if ids else 0  # before _event, which may close the window
            if groups is not None:
                self._grouped.append((len(self._latency) - 1, groups))
            if self._door_all:
                if commitment is None:  # not a contiguous CPU tensor: the general path
                    self._sample(inputs, len(self._latency) - 1)
                else:
                    self._committed.append(len(self._latency) - 1)
                    self._commitments.append(commitment)
            self._due -= 1
            if self._due == 0 or self.drift_flag:
                self._event(inputs)
        finally:
            self._lock.release()
        if ids:
            return probs, [self.decision_id(n) for n in range(first, first + rows)]
        return probs

    def _at_door(self, inputs: Any) -> str | None:
        """The commitment of a contiguous CPU tensor request, hashed in place; None for any other request."""
        if type(inputs) is not torch.Tensor:
            return None
        try:
            # numpy() refuses tensors on a device, needing grad or of a dtype numpy lacks; hashing refuses a
            # non-contiguous array. The caller's tensor is read where it lies: no copy, no view object kept.
            return self._commit(inputs.numpy())
        except (TypeError, RuntimeError, ValueError, BufferError):
            return None

    def _checked_groups(self, groups: Sequence[str], rows: int) -> list[str]:
        if self.policy is None:
            raise InputError("groups label rows for a review policy's sensitive_groups; this recorder has no policy")
        labels = [groups] if isinstance(groups, str) else list(groups)
        if len(labels) != rows or not all(isinstance(g, str) for g in labels):
            raise InputError(f"groups must hold one label (a str) per row: {rows} rows, {len(labels)} labels")
        return labels

    def _numbered(self) -> int:
        """The decision number of the latest request's first row (lock held). The window's running row count is
        brought up to date only here, so requests served without ``ids`` keep no counter."""
        rows = self._rows
        latest = len(rows) - 1
        self._counted += sum(rows[self._upto:latest])
        self._upto = latest
        return self._first + self._counted

    def _close_aged_windows(self) -> None:
        # Closing by age here rather than at the next request: a server that goes quiet would otherwise hold its
        # last requests unrecorded until traffic resumes or the run closes. Reviewers' decisions and stop/resume
        # events, taken in other processes, are recorded from here too, within a second (a server runs for
        # months, and its ledger would otherwise show none of them until it closes), and retained inputs whose
        # retention period has ended are deleted every minute.
        failures = FailureWarnings()

        def attempt(what: str, work: Callable[[], Any]) -> None:
            try:
                work()
            except Exception as e:  # a busy or damaged side store must not stop serving
                failures.warn(what, e)

        reviews = self._ager_reviews
        look = min(self.window_seconds / 4, _REVIEW_SECONDS)
        next_review, next_expiry = 0.0, 0.0 if self.retain_seconds is not None else math.inf
        try:
            while not self._closing.wait(look):
                if time.monotonic() >= self._deadline:
                    attempt("closing an aged window failed", self._close_aged_window)
                if reviews is not None and time.monotonic() >= next_review:
                    next_review = time.monotonic() + _REVIEW_SECONDS
                    attempt("review decisions not recorded yet", partial(reviews.record_pending, self.run.record))
                if time.monotonic() >= next_expiry:
                    next_expiry = time.monotonic() + _EXPIRY_SECONDS
                    attempt("expired inputs not deleted yet",
                            partial(expire_inputs, self.run))
        finally:  # its connection is this thread's: closed here, never under a transaction it is running
            if reviews is not None and reviews is not self.review:
                reviews.close()

    def _close_aged_window(self) -> None:
        with self._lock:
            if time.monotonic() >= self._deadline:
                self._settle()
                self._flush()

    def _settle(self) -> None:
        # The window's tensors on an accelerator were made on the serving threads' streams, which this thread's
        # stream does not follow: wait for the device before reducing or copying them (rare: a quiet server).
        sync = torch.accelerator.synchronize if hasattr(torch, "accelerator") else torch.cuda.synchronize  # < 2.6
        for device in {t.device for t in (*self._outputs, *self._folded, *self._kept) if not t.is_cpu}:
            sync(device)

    def _event(self, inputs: Any) -> None:
        """Open, sample, fold or close the window at this request; set how many requests until the next event."""
        self._due = 1  # until the end of this method: a refused request must not stop the events that follow
        request = len(self._latency) - 1
        if request == 0:
            self._deadline = time.monotonic() + self.window_seconds
        if self.drift_flag:
            self._drifted.append(request)
        every = self.sample_every
        sampling = self._keep_inputs and not self._door_all  # the door commits every request itself
        if sampling and (self._served + request) % every == 0:
            self._sample(inputs, request)
        if len(self._outputs) >= _FOLD:
            self._fold()
        if request + 1 >= self.window or self._kept_bytes >= _KEPT_BYTES:
            self._flush()
            return
        due = min(_FOLD - len(self._outputs), self.window - request - 1)
        if sampling:
            due = min(due, every - (self._served + request) % every)
        self._due = due

    def _sample(self, inputs: Any, request: int) -> None:
        """Commit (and, with retention on, keep) this request's input."""
        fresh = not isinstance(inputs, torch.Tensor)
        if fresh:
            # A new tensor: nothing the caller does can change it.
            inputs = request_bytes(inputs, self.fingerprint == "row" or self.retain_inputs)
        elif (self.fingerprint == "row" or self.retain_inputs) and tuple(inputs.shape[:1]) != (self._rows[request],):
            raise InputError(f"fingerprint='row' and retain_inputs=True keep input rows by decision, so the model must "
                             f"give one output row per input row (inputs {tuple(inputs.shape)}, "
                             f"{self._rows[request]} output rows)")
        self._committed.append(request)
        at_door = self.fingerprint == "request" and inputs.is_cpu
        if at_door:
            # One HMAC call over the request's bytes, now: nothing the caller does to its tensor afterwards can
            # change what is committed, and nothing is held. Hashing a copy on the writer thread instead was
            # measured to cost the serving thread as much (each hash hands the GIL back and forth) plus the copy.
            self._commitments.append(self._commit(fingerprint_buffers([inputs.detach()])[0]))
        if self.retain_inputs or (self.fingerprint != "none" and not at_door):
            # Rows to fingerprint, inputs on an accelerator (copied asynchronously, committed on the writer
            # thread, so serving never waits for the device) and retained inputs are held until the window ends.
            with torch.inference_mode():
                kept = inputs.detach().clone() if self.copy_inputs and not fresh else inputs.detach()
            self._kept.append(kept)
            self._kept_bytes += kept.nbytes
            if self.fingerprint == "request" and not at_door:
                self._commitments.append(kept)

    def _fold(self) -> None:
        # Every output held until its window is recorded is one more live tensor beside the model's own, and the
        # serving loop slows with their number (~1 us per request with 1,024 held singly, measured); one
        # concatenation per _FOLD requests keeps the count small.
        with torch.inference_mode():
            self._folded.append(torch.cat(self._outputs))
        self._outputs = []

    def flush(self) -> None:
        """Record the pending requests now (one ``inference`` record) and route their flagged rows to review."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        latency = self._latency
        self._due, self._deadline = 1, math.inf  # the next request opens a window
        if not latency:
            return
        rows, committed, kept, drifted, grouped = self._rows, self._committed, self._kept, self._drifted, self._grouped
        first, outputs, commitments = self._first, self._folded + self._outputs, self._commitments
        self._latency, self._rows, self._committed, self._kept, self._drifted = [], [], [], [], []
        self._grouped = []
        self._outputs, self._folded, self._commitments, self._kept_bytes = [], [], [], 0
        self._counted = self._upto = 0
        decisions = sum(rows)
        self._first += decisions
        self._served += len(rows)
        recorded: Any = None
        if self.policy is not None or (self.outputs and not outputs[0].is_cpu):
            # Flagging reads the window's outputs now; reductions on an accelerator are queued on the serving
            # thread's stream, in order after the forwards that produced them.
            prediction, confidence = _top_class(outputs)
            recorded = _outputs_value(prediction, confidence) if self.outputs else None
        elif self.outputs:  # CPU reductions run on the writer thread, whose kernels need no GIL
            recorded = Computed(lambda: _outputs_value(*_top_class(outputs)))
        with torch.inference_mode():
            batch = torch.cat(kept) if kept and (self.fingerprint == "row" or self.retain_inputs) else None
        inputs: Any = commitments
        if self.fingerprint == "row":
            inputs = Fingerprint(batch) if kept else []
        elif not all(type(c) is str for c in commitments):
            # Inputs from an accelerator are committed on the writer thread; in the rare window that also holds
            # inputs committed at the door, they are committed here so the list stays in request order.
            inputs = Fingerprint(commitments) if not any(type(c) is str for c in commitments) else [
                c if type(c) is str else self._commit(fingerprint_buffers([c])[0]) for c in commitments]
        self.run.record("inference", {
            "model": self.digest, "stream": self.stream, "first_decision": first, "decisions": decisions,
            "rows": Packed(np.array(rows, dtype=np.uint32)),
            "latency_us": Packed(np.rint(np.array(latency) * 1e6).astype(np.uint32)),
            "fingerprint": self.fingerprint,
            "committed": Packed(np.array(committed if self.fingerprint != "none" else [], dtype=np.uint32)),
            "inputs": inputs, "outputs": recorded, "retained": self.retain_inputs}, copy=False)
        if self._inputs is None and self.policy is None:
            return
        starts = list(accumulate(rows[:-1], initial=first))
        if self._inputs is not None and batch is not None:
            expires = None if self.retain_seconds is None else now_us() + round(self.retain_seconds * 1e6)
            self._inputs.put_many([self.decision_id(starts[i] + j) for i in committed for j in range(rows[i])],
                                  batch.detach().cpu().numpy(), expires)
        if self.policy is not None:
            drift, sensitive = [False] * decisions, [False] * decisions
            for i in drifted:
                drift[starts[i] - first:starts[i] - first + rows[i]] = [True] * rows[i]
            for i, labels in grouped:
                sensitive[starts[i] - first:starts[i] - first + rows[i]] = [g in self.policy.sensitive_groups
                                                                            for g in labels]
            flagged = flag_rows(self.policy, self.review, self._rng,
                                [self.decision_id(n) for n in range(first, first + decisions)], prediction,
                                confidence, drift, sensitive)
            if self._explainer is not None and batch is not None and flagged:
                explain_rows(self._explainer, self.policy.explain, self.decision_id, flagged, first,
                             [(starts[i], rows[i]) for i in committed], batch)

    def close(self) -> None:
        """Record pending requests, then any reviewer decisions and stop/resume events still in the queue.

        Called by the run when it closes; calling it earlier is harmless.
        """
        self._closing.set()
        if self._ager is not threading.current_thread():
            self._ager.join()
        self.flush()
        if self._explainer is not None:
            self._explainer.close()
        if self.review is not None:
            self.review.record_pending(self.run.record)
