"""The append side of the ledger: one background writer thread behind a bounded queue.

The caller's thread only checks and copies the record's data (:func:`~torchwitness.ledger.encoding.snapshot`),
takes a sequence number and appends to an in-memory queue. The writer thread canonicalises (RFC 8785),
hashes, appends to the segment and index files, and signs a checkpoint every ``checkpoint_every`` records or
``checkpoint_seconds`` seconds, and at close. While idle it sleeps until an append, a flush or a due checkpoint
wakes it (it does not poll), so an idle run costs the process nothing. A second thread performs what other
processes leave in the run's inbox (:mod:`torchwitness.ledger.inbox`): it looks once a second, a file-status
check while no inbox exists.

Back-pressure: the queue holds ``queue_size`` records. When it is full, ``on_full="block"`` (default) makes the
caller wait until the writer catches up, so no evidence is ever lost; ``on_full="drop"`` discards the record,
counts it and has the writer append a ``ledger.dropped`` record with the count, so the loss itself is evidence.

Crash safety: records reach the OS before the checkpoint that covers them is written, so after a SIGKILL at
any moment every checkpointed record is on disk; reopening truncates at most one torn line and records a
``ledger.recovered`` record. ``fsync`` chooses protection against power loss as well: ``"checkpoint"``
(default) syncs records before each checkpoint, ``"always"`` after every batch, ``"never"`` leaves it to the OS.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import hashlib
import os
import re
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from torchwitness.errors import (
    FailureWarnings,
    InputError,
    LedgerError,
    SigningKeyError,
)
from torchwitness.ledger.canonical import canonical_json
from torchwitness.ledger.checkpoints import CheckpointWriter, read_note, remove_stale
from torchwitness.ledger.encoding import finalize, snapshot
from torchwitness.ledger.erasure import Completed, erase_personal, finish_interrupted
from torchwitness.ledger.keys import PublicKey, SigningKey, read_vkey
from torchwitness.ledger.layout import Layout, create_manifest, read_manifest
from torchwitness.ledger.merkle import Frontier, leaf_hashes
from torchwitness.ledger.note import Checkpoint
from torchwitness.ledger.personal import PersonalStore
from torchwitness.ledger.segments import SegmentWriter, recover
from torchwitness.witness import cosigner_for

RECORD_VERSION = 1
_KIND = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")

FsyncPolicy = Literal["never", "checkpoint", "always"]
FullPolicy = Literal["block", "drop"]


def now_us() -> int:
    """Microseconds since the Unix epoch (UTC): the records' ``ts`` and every ``*_us`` field."""
    return time.time_ns() // 1000


class Ledger:
    """An open, append-only, signed ledger in a run folder.

    >>> import tempfile, os
    >>> os.environ["TORCHWITNESS_KEY_DIR"] = tempfile.mkdtemp()
    >>> with Ledger.open(tempfile.mkdtemp() + "/run") as ledger:
    ...     seq = ledger.append("note", {"text": "hello"})
    >>> seq
    0
    """

    def __init__(self, layout: Layout, manifest: dict, key: SigningKey, *, rank: int, checkpoint_every: int,
                 checkpoint_seconds: float, fsync: FsyncPolicy, on_full: FullPolicy, queue_size: int,
                 retain_personal: bool, lock_fd: int, inbox_seconds: float = 1.0, witnesses: tuple = ()) -> None:
        if checkpoint_every < 1 or checkpoint_seconds <= 0 or queue_size < 1 or inbox_seconds <= 0:
            raise InputError("checkpoint_every, checkpoint_seconds, queue_size and inbox_seconds must be positive")
        if fsync not in ("never", "checkpoint", "always"):
            raise InputError(f"fsync must be 'never', 'checkpoint' or 'always', not {fsync!r}")
        if on_full not in ("block", "drop"):
            raise InputError(f"on_full must be 'block' or 'drop', not {on_full!r}")
        self.layout = layout
        self.root = layout.root
        self.run_id: str = manifest["run"]
        self.origin: str = manifest["origin"]
        self.rank = rank
        self._key = key
        self._lock_fd = lock_fd
        self._checkpoint_every = checkpoint_every
        self._checkpoint_seconds = checkpoint_seconds
        self._fsync = fsync
        self._on_full = on_full
        self._maxsize = queue_size
        self._retain = retain_personal
        self._personal: PersonalStore | None = None

        leaves, recovery = recover(layout)
        remove_stale(layout)
        self._checkpoints = CheckpointWriter(layout, self.origin, key, leaves, sync=fsync != "never")
        if len(leaves) > self._checkpoints.size:
            # Records no checkpoint covers (a crash before the checkpoint, or lines someone added) are signed by
            # this session's next checkpoint: say so in a record, so they are never adopted silently.
            digest = hashlib.sha256(b"".join(leaves[self._checkpoints.size:])).hexdigest()
            recovery = dataclasses.replace(recovery, adopted=(self._checkpoints.size, len(leaves) - 1, digest))
        self.recovery = recovery
        self._frontier = Frontier()
        for h in leaves:
            self._frontier.append(h)
        self._segments = SegmentWriter(layout, size=len(leaves), segment_records=manifest["segment_records"])

        self._queue: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._next_seq = len(leaves)
        self._dropped = 0
        self._dropped_reported = 0
        self._cond = threading.Condition()
        self._written = len(leaves)
        self._checkpointed = self._checkpoints.size
        self._last_checkpoint_time = time.monotonic()
        self._checkpoint_target = 0
        self._wake = threading.Event()
        self._idle = False
        self._stopping = False
        self._failed: BaseException | None = None
        # The writer's error, set before _failed (named under the append lock): a caller holding that lock while
        # it waits for room names the failure itself, since the writer cannot take the lock.
        self._dying: BaseException | None = None
        self._closed = False
        self._cosigner = cosigner_for(layout, self.origin, witnesses, self.append)  # cosignatures of checkpoints
        self._thread = threading.Thread(target=self._run, name=f"torchwitness-writer-{self.run_id}", daemon=True)
        self._thread.start()
        atexit.register(self._close_at_exit)
        if recovery.needed:
            adopted = recovery.adopted
            self.append("ledger.recovered", {
                "torn_bytes": recovery.torn_bytes,
                "index_entries_added": recovery.index_added,
                "index_entries_removed": recovery.index_removed,
                "records": len(leaves),
                "adopted": adopted and {"first_seq": adopted[0], "last_seq": adopted[1],
                                        "leaves_sha256": f"sha256:{adopted[2]}"},
            })
        # Interrupted erasures are finished first, then what other processes left while the run was closed, before
        # the opener appends; then a thread looks at the inbox every inbox_seconds and once more at close.
        self._inbox: Any = None
        self._inbox_failures = FailureWarnings()
        self.completed_erasures: list[Completed] = finish_interrupted(self)
        self._look_in_inbox()
        self._inbox_seconds = inbox_seconds
        self._inbox_closing = threading.Event()
        self._inbox_thread = threading.Thread(target=self._watch_inbox, name=f"torchwitness-inbox-{self.run_id}",
                                              daemon=True)
        self._inbox_thread.start()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, root: str | Path, *, key_dir: Path | None = None, rank: int = 0, run_id: str | None = None,
             shard: bool = False,
             segment_records: int = 65_536, checkpoint_every: int = 1000, checkpoint_seconds: float = 30.0,
             fsync: FsyncPolicy = "checkpoint", on_full: FullPolicy = "block", queue_size: int = 100_000,
             retain_personal: bool = False, inbox_seconds: float = 1.0, witnesses: tuple = ()) -> Ledger:
        """Create the run folder ``root`` or reopen it for appending (recovering after a crash).

        ``run_id`` names a new run (random by default); ``shard=True`` makes this ledger one rank's shard of a
        distributed run, with its own origin ``torchwitness/<run>/rank-<rank>``. While open, the ledger performs the
        operations other processes leave in its inbox (:mod:`torchwitness.ledger.inbox`) every ``inbox_seconds``.
        """
        layout = Layout(Path(root))
        if layout.root.exists() and not layout.root.is_dir():
            raise InputError(f"not a folder: {layout.root}")
        fresh = not layout.manifest.exists()
        if fresh and layout.root.exists() and any(layout.root.iterdir()):
            raise InputError(f"{layout.root} exists, is not empty and is not a torchwitness run folder")
        layout.root.mkdir(parents=True, exist_ok=True)
        lock_fd = layout.take_writer_lock()
        try:
            if fresh:
                key = SigningKey.load_or_create(key_dir)
                run_id = run_id or uuid.uuid4().hex[:16]
                manifest = create_manifest(layout, key.public, run_id=run_id, created_us=now_us(),
                                           origin=f"torchwitness/{run_id}" + (f"/rank-{rank}" if shard else ""),
                                           segment_records=segment_records)
            else:
                manifest = read_manifest(layout.root)
                key = cls.signing_key_for(manifest, layout, key_dir)
            return cls(layout, manifest, key, rank=rank, checkpoint_every=checkpoint_every,
                       checkpoint_seconds=checkpoint_seconds, fsync=fsync, on_full=on_full,
                       queue_size=queue_size, retain_personal=retain_personal, lock_fd=lock_fd,
                       inbox_seconds=inbox_seconds, witnesses=tuple(witnesses))
        except BaseException:
            os.close(lock_fd)
            raise

    @staticmethod
    def signing_key_for(manifest: dict, layout: Layout, key_dir: Path | None) -> SigningKey:
        """The private key of the run whose manifest and layout these are, from ``key_dir`` (or the default)."""
        if not layout.vkey.exists():
            raise LedgerError(f"{layout.vkey} is missing: cannot append to this run")
        public = read_vkey(layout.vkey)
        if public.fingerprint != manifest.get("signer"):
            raise SigningKeyError("the run's public key does not match the signer in ledger.json")
        # Never create a key here: a run whose key is gone must fail, not carry on under a new signer.
        try:
            return SigningKey.find(public.fingerprint, key_dir)
        except SigningKeyError as e:
            raise SigningKeyError(f"cannot append to {layout.root}: its signing key is missing ({e})") from None

    # ------------------------------------------------------------------ appending
    @property
    def public_key(self) -> PublicKey:
        return self._key.public

    @property
    def personal(self) -> PersonalStore:
        """The erasable side store (opened on first use)."""
        if self._personal is None:
            with self._lock:
                if self._personal is None:
                    self._personal = PersonalStore(self.layout.personal, retain=self._retain)
        return self._personal

    def append(self, kind: str, data: Any = None, step: int | None = None, *, copy: bool = True) -> int | None:
        """Queue one record; return its sequence number (None if dropped under ``on_full="drop"``).

        ``copy=False`` hands the tensors in ``data`` over to the ledger instead of cloning them: the caller must
        not modify them afterwards.
        """
        if self._failed is not None:
            self._raise_stopped()
        if self._closed:
            raise LedgerError("the ledger is closed")
        if type(kind) is not str or not _KIND.match(kind):
            raise InputError(f"record kind {kind!r} must be dotted lower-case words, like 'train.step'")
        if step is not None and (type(step) is not int or step < 0):
            raise InputError(f"step must be a non-negative int or None, not {step!r}")
        payload, deferred = snapshot({} if data is None else data, copy=copy)
        return self._enqueue(kind, step, payload, deferred, force=False)

    def _enqueue(self, kind: str, step: int | None, payload: Any, deferred: bool, *, force: bool) -> int | None:
        ts = now_us()
        with self._lock:
            if self._dying is not None:
                self._raise_stopped()
            if not force and len(self._queue) >= self._maxsize:
                if self._on_full == "drop":
                    self._dropped += 1
                    return None
                self._wake.set()
                while len(self._queue) >= self._maxsize and self._dying is None:
                    time.sleep(0.0005)
                if self._dying is not None:
                    self._raise_stopped()
            seq = self._next_seq
            self._next_seq += 1
            self._queue.append((seq, ts, kind, step, payload, deferred))
        if self._idle:
            self._wake.set()
        return seq

    def put_blob(self, content: bytes) -> str:
        """Store an artefact by content address; return ``sha256:<hex>`` to cite it from a record."""
        digest = hashlib.sha256(content).hexdigest()
        path = self.layout.blobs / f"sha256-{digest}"
        if not path.exists():
            self.layout.blobs.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(content)
            os.replace(tmp, path)
        return f"sha256:{digest}"

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record queued so far is written to the segment files."""
        self._wait(lambda: self._written, timeout)

    def checkpoint(self, timeout: float | None = None) -> None:
        """Write a signed checkpoint covering every record queued so far, and wait for it."""
        self._checkpoint_target = max(self._checkpoint_target, self._next_seq)
        self._wait(lambda: self._checkpointed, timeout)

    def _wait(self, progress, timeout: float | None) -> None:
        target = self._next_seq
        self._wake.set()
        with self._cond:
            ok = self._cond.wait_for(lambda: progress() >= target or self._failed is not None, timeout)
        if self._failed is not None:
            self._raise_stopped()
        if not ok:
            raise LedgerError(f"ledger did not catch up within {timeout} s")

    def _close_at_exit(self) -> None:
        # A run left open when Python exits is sealed here; one whose ledger already failed gets a line, not the
        # traceback Python prints for an atexit handler that raises.
        try:
            self.close()
        except Exception as e:
            print(f"torchwitness: run {self.layout.root} left open at exit could not be sealed: {e}",
                  file=sys.stderr)

    def close(self) -> None:
        """Drain the queue, sign a final checkpoint and release the run folder. Idempotent."""
        if self._closed:
            return
        atexit.unregister(self._close_at_exit)
        self._inbox_closing.set()
        self._inbox_thread.join()  # it performs what is still in the inbox first
        if self._inbox is not None:
            self._inbox.close()
        self._checkpoint_target = max(self._checkpoint_target, self._next_seq)
        with self._cosigner.closing():  # no more records from it; at the end, the final checkpoint's cosignatures
            self._stopping = True
            self._wake.set()
            self._thread.join()
        self._closed = True
        try:
            self._segments.close()
        except OSError:  # the writer failed writing (a full disk): its buffers cannot be flushed either
            if self._failed is None:
                raise
        finally:
            if self._personal is not None:
                self._personal.close()
            os.close(self._lock_fd)
        if self._failed is not None:
            self._raise_stopped()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def size(self) -> int:
        """Records written so far (queued ones not included)."""
        return self._written

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def next_seq(self) -> int:  # the seq the next appended record gets
        return self._next_seq

    # ------------------------------------------------------------------ inbox
    def _watch_inbox(self) -> None:
        # A thread of its own rather than the writer's: performing an operation appends (and an erasure flushes),
        # which the writer thread cannot wait for.
        while True:
            closing = self._inbox_closing.wait(self._inbox_seconds)
            self._look_in_inbox()
            if closing:
                return

    def _look_in_inbox(self) -> None:
        from torchwitness.ledger.inbox import Inbox

        try:
            if self._inbox is None and self.layout.inbox.exists():  # one file-status check while there is none
                self._inbox = Inbox(self.layout.inbox)
            if self._inbox is not None and self._failed is None:
                self._inbox.drain(self)
        except Exception as e:  # a damaged inbox must not stop the run
            self._inbox_failures.warn(f"cannot perform the operations in {self.layout.inbox}", e)

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        try:
            while True:
                # Never drain past a checkpoint boundary, so checkpoints land every `checkpoint_every` exactly.
                batch = self._drain(self._checkpoint_every - (self._frontier.size - self._checkpointed))
                if batch:
                    self._write(batch)
                if self._dropped != self._dropped_reported:
                    delta = self._dropped - self._dropped_reported
                    self._dropped_reported = self._dropped
                    payload, _ = snapshot({"count": delta, "total": self._dropped})
                    self._enqueue("ledger.dropped", None, payload, False, force=True)
                    continue
                size, done = self._frontier.size, self._checkpointed
                if size > done and (size >= self._checkpoint_target > done
                                    or size - done >= self._checkpoint_every
                                    or time.monotonic() - self._last_checkpoint_time >= self._checkpoint_seconds):
                    self._write_checkpoint()
                if self._stopping and not self._queue:
                    return
                if not batch:
                    self._idle = True
                    # An append between the drain above and `_idle = True` saw the writer busy and did not wake
                    # it: look once more before sleeping. Otherwise appends, flushes and close wake the writer, so
                    # it sleeps until then or until a time-based checkpoint falls due (no polling while idle).
                    if not self._queue:
                        self._wake.wait(timeout=self._idle_timeout())
                    self._wake.clear()
                    self._idle = False
        except BaseException as e:  # surfaced to the caller on its next append/flush/close
            self._dying = e  # first, so a caller waiting for room in the queue (holding the lock) gives up
            with self._lock:  # no seq is handed out while the lost range is being named
                if self._failed is None:
                    self._failed = self._stopped_by(e)
            with self._cond:
                self._cond.notify_all()

    def _raise_stopped(self) -> None:
        if self._failed is None and self._dying is not None:  # called holding the append lock (see _dying)
            self._failed = self._stopped_by(self._dying)
        raise LedgerError(f"the ledger writer stopped: {self._failed or 'it failed writing'}") from self._failed

    def _stopped_by(self, error: BaseException) -> BaseException:
        """The writer's failure as the caller will see it: which records it accepted were never written."""
        if not isinstance(error, OSError):
            return error
        first, last = self._segments.size, self._next_seq - 1
        lost = f"records seq {first}..{last} were accepted but not written (reopening recovers any that reached " \
            "the disk)" if last >= first else "every accepted record was written"
        return LedgerError(f"cannot write {self.layout.root} at record seq {first} ({error.strerror or error}); "
                           f"{lost}; the ledger accepts no more records")

    def _idle_timeout(self) -> float | None:
        """Seconds until a time-based checkpoint falls due; None when every written record is signed."""
        if self._frontier.size <= self._checkpointed:
            return None
        return max(0.0, self._last_checkpoint_time + self._checkpoint_seconds - time.monotonic())

    def _drain(self, limit: int) -> list:
        q = self._queue  # appended to by callers, taken from only here: it holds at least len(q) records
        return [q.popleft() for _ in range(min(len(q), max(1, min(limit, 4096))))]

    def _commit_personal(self, value: Any) -> str:
        return self.personal.commit(value)

    def _encode(self, seq: int, ts: int, kind: str, step: int | None, payload: Any, deferred: bool) -> bytes:
        record = {"v": RECORD_VERSION, "seq": seq, "run": self.run_id, "rank": self.rank, "ts": ts,
                  "kind": kind, "step": step, "data": payload}
        try:
            if deferred:
                record["data"] = finalize(payload, self._commit_personal, self.personal.fingerprint)
            return canonical_json(record)
        except Exception as e:  # keep the seq: a gap would be indistinguishable from tampering
            record.update(kind="ledger.error", step=step,
                          data={"kind": kind, "error": f"{type(e).__name__}: {e}"})
            return canonical_json(record)

    def _write(self, batch: list) -> None:
        lines = []
        for i, item in enumerate(batch, 1):
            lines.append(self._encode(*item))
            if i % 16 == 0:
                # Hand the GIL back now and then: a caller returning from a torch op (which ran without the GIL)
                # would otherwise wait up to the interpreter's 5 ms switch interval behind a long batch.
                time.sleep(0)
        hashes = leaf_hashes(lines)
        for h in hashes:
            self._frontier.append(h)
        self._segments.append(lines, hashes)
        if self._fsync == "always":
            self._segments.sync()
        with self._cond:
            self._written = self._segments.size
            self._cond.notify_all()

    def _write_checkpoint(self) -> None:
        if self._fsync != "never":
            self._segments.sync()
        size = self._frontier.size
        self._checkpoints.write(size, self._frontier.root())
        self._cosigner.submit(size)
        self._last_checkpoint_time = time.monotonic()
        with self._cond:
            self._checkpointed = size
            self._cond.notify_all()

    def signed_head(self) -> dict[str, Any]:
        """Checkpoint everything queued so far and return this ledger's signed head (for run-level checkpoints)."""
        self.checkpoint()
        size = self._checkpointed
        signed = read_note(self.layout.checkpoint(size))
        return {"rank": self.rank, "origin": self.origin, "size": size, "root": signed.checkpoint.root.hex(),
                "signer": self._key.public.fingerprint}

    def sign(self, checkpoint: Checkpoint) -> str:
        """Sign a checkpoint of another tree (a run-level checkpoint) with this ledger's key."""
        return checkpoint.sign(self._key)

    # ------------------------------------------------------------------ erasure
    def erase(self, *, values: list[Any] = (), commitments: list[str] = (), reason: str = "",
              also: list[tuple[str, Any]] = ()) -> int:
        """Crypto-shred personal values (by value or commitment) and record it, crash-atomically; returns how many
        were erased. See :func:`torchwitness.ledger.erasure.erase_personal` (``also``: records it documents too)."""
        return erase_personal(self, list(values), list(commitments), reason, list(also))
