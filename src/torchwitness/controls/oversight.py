"""Human oversight: a review queue, reviewers' decisions and a stop switch (EU AI Act Art. 14, GDPR Art. 22).

The queue is an SQLite file (WAL mode, so a serving process and reviewers' CLI sessions can write at once). A
request flagged by policy waits there; a reviewer approves it, overrides it with a new label, or escalates it.
Decisions reach the ledger as ``review.decision`` records, reviewer ids only as erasable commitments. Because
only one process may append to a ledger at a time, a decision taken while the run is being served is stored
as *pending* and recorded by the serving process within a second (``ReviewQueue.record_pending``) or by the
next CLI call that can open the ledger; ``recorded_seq`` says which record carries it.

The stop switch is a log of stop and resume events in the same file: the recorder polls its latest state at most
every ``poll_seconds`` and refuses to serve while it is stopped; every stop and resume is recorded with who did it,
also one lifted before the serving process looked.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from torchwitness.errors import InputError
from torchwitness.ledger.encoding import Personal
from torchwitness.ledger.schema import register_kind
from torchwitness.ledger.transactions import write_transaction
from torchwitness.ledger.writer import now_us

T = TypeVar("T")
_RECORD_BATCH = 256  # decisions recorded per write transaction (see ReviewQueue.record_pending)
Action = Literal["approve", "override", "escalate"]
ACTIONS = ("approve", "override", "escalate")

_SCHEMA = """
PRAGMA journal_mode = WAL;
PRAGMA secure_delete = ON;
CREATE TABLE IF NOT EXISTS requests (
    decision_id TEXT PRIMARY KEY, reason TEXT NOT NULL, created_us INTEGER NOT NULL,
    prediction INTEGER, confidence REAL, status TEXT NOT NULL DEFAULT 'open');
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, decision_id TEXT NOT NULL, action TEXT NOT NULL, label INTEGER,
    reviewer TEXT NOT NULL, note TEXT, decided_us INTEGER NOT NULL, recorded_seq INTEGER);
CREATE TABLE IF NOT EXISTS switch_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, stopped INTEGER NOT NULL, who TEXT NOT NULL, reason TEXT,
    changed_us INTEGER NOT NULL, recorded INTEGER NOT NULL DEFAULT 0);
"""


class ReviewDecisionRecord(msgspec.Struct):
    """``review.decision``: a human's decision on one flagged request."""

    decision_id: str
    action: str
    label: int | None
    reviewer: Any  # {"$personal": ...}
    reason: str
    decided_us: int


class StopRecord(msgspec.Struct):
    """``oversight.stop`` / ``oversight.resume``: who stopped or resumed serving, and why."""

    who: Any
    reason: str
    changed_us: int


register_kind("review.decision", ReviewDecisionRecord)
register_kind("oversight.stop", StopRecord)
register_kind("oversight.resume", StopRecord)


@dataclass
class ReviewRequest:
    decision_id: str
    reason: str
    created_us: int
    prediction: int | None
    confidence: float | None
    status: str


def _locked(method: Callable[..., T]) -> Callable[..., T]:
    """One thread at a time on the queue's connection: a serving thread, the recorder's window-ageing thread and a
    caller may share it, and a transaction is several calls (two threads' interleaved BEGIN and COMMIT failed)."""
    @functools.wraps(method)
    def locked(self: ReviewQueue, *args: Any, **kwargs: Any) -> T:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class ReviewQueue:
    """The SQLite review queue of one run (by default ``RUN/private/review.sqlite``). Safe to share between
    threads; several processes may open it at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.executescript(_SCHEMA)
            self._migrate_switch()
        except sqlite3.DatabaseError as e:
            raise InputError(f"review queue {self.path} is unreadable: {e}") from None

    def _migrate_switch(self) -> None:
        # Queues written before the switch kept only its latest state, in a one-row table `switch`: its state,
        # if not yet in the ledger, moves to the event log so that it is still recorded.
        exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'switch'"
        if self._db.execute(exists).fetchone() is None:
            return
        with write_transaction(self._db):
            if self._db.execute(exists).fetchone() is not None:  # another process may have moved it meanwhile
                self._db.execute("INSERT INTO switch_events (stopped, who, reason, changed_us, recorded) "
                                 "SELECT stopped, COALESCE(who, ''), reason, COALESCE(changed_us, 0), recorded "
                                 "FROM switch WHERE id = 1")
                self._db.execute("DROP TABLE switch")

    @classmethod
    def for_run(cls, run_dir: str | Path) -> ReviewQueue:
        return cls(Path(run_dir) / "private" / "review.sqlite")

    @_locked
    def close(self) -> None:
        self._db.close()

    # -- requests
    @_locked
    def submit(self, decision_id: str, reason: str, *, prediction: int | None = None,
               confidence: float | None = None) -> None:
        self._db.execute("INSERT OR IGNORE INTO requests (decision_id, reason, created_us, prediction, confidence) "
                         "VALUES (?, ?, ?, ?, ?)", (decision_id, reason, now_us(), prediction, confidence))

    @_locked
    def submit_many(self, rows: list[tuple[str, str, int | None, float | None]]) -> None:
        now = now_us()
        with write_transaction(self._db):
            self._db.executemany("INSERT OR IGNORE INTO requests (decision_id, reason, created_us, prediction, "
                                 "confidence) VALUES (?, ?, ?, ?, ?)", [(d, r, now, p, c) for d, r, p, c in rows])

    @_locked
    def open_requests(self, limit: int = 100) -> list[ReviewRequest]:
        rows = self._db.execute("SELECT decision_id, reason, created_us, prediction, confidence, status FROM "
                                "requests WHERE status = 'open' ORDER BY created_us, decision_id LIMIT ?", (limit,))
        return [ReviewRequest(*r) for r in rows]

    # -- decisions
    @_locked
    def decide(self, decision_id: str, action: str, *, reviewer: str, label: int | None = None,
               note: str = "") -> int:
        """Store a reviewer's decision; returns its id. Recorded in the ledger by :meth:`record_pending`."""
        if action not in ACTIONS:
            raise InputError(f"review action must be one of {', '.join(ACTIONS)}, not {action!r}")
        if action == "override" and label is None:
            raise InputError("an override needs the corrected --label")
        if not reviewer:
            raise InputError("a decision needs a reviewer id")
        with write_transaction(self._db):
            if self._db.execute("SELECT 1 FROM requests WHERE decision_id = ?", (decision_id,)).fetchone() is None:
                raise InputError(f"no review request for decision {decision_id!r}")
            cur = self._db.execute("INSERT INTO decisions (decision_id, action, label, reviewer, note, decided_us) "
                                   "VALUES (?, ?, ?, ?, ?, ?)",
                                   (decision_id, action, label, reviewer, note, now_us()))
            self._db.execute("UPDATE requests SET status = ? WHERE decision_id = ?",
                             ("escalated" if action == "escalate" else "decided", decision_id))
        return int(cur.lastrowid)

    @_locked
    def decisions(self) -> list[dict[str, Any]]:
        cols = ("id", "decision_id", "action", "label", "note", "decided_us", "recorded_seq")
        rows = self._db.execute(f"SELECT {', '.join(cols)} FROM decisions ORDER BY id")
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def record_pending(self, record: Any) -> int:
        """Record every decision and stop/resume event not yet in the ledger (``record`` is ``run.record`` or
        ``Ledger.append``); returns how many decisions.

        In write transactions of at most 256 decisions, so two callers (a serving recorder's threads, another
        process) record each once (the second waits, then finds them recorded) and a backlog never holds the
        queue for long (a serving thread polls the stop switch through it)."""
        decided = events = 0
        while True:
            with self._lock, write_transaction(self._db):
                batch, switched, complete = self._record_pending(record, _RECORD_BATCH)
            decided, events = decided + batch, events + switched
            if batch < _RECORD_BATCH or not complete:  # a record the ledger dropped stays pending for next time
                break
        if decided or events:
            with self._lock:
                # Until checkpointed and truncated, the WAL still holds the old pages with the ids in them.
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return decided

    def _record_pending(self, record: Any, limit: int) -> tuple[int, int, bool]:
        """Record up to ``limit`` pending decisions and the pending switch events; returns how many of each were
        recorded, and whether every one was (the ledger drops records when full under ``on_full="drop"``; a
        dropped one keeps its reviewer id and stays pending)."""
        rows = self._db.execute("SELECT id, decision_id, action, label, reviewer, note, decided_us FROM decisions "
                                "WHERE recorded_seq IS NULL ORDER BY id LIMIT ?", (limit,)).fetchall()
        decided = events = 0
        for rid, decision_id, action, label, reviewer, note, decided_us in rows:
            seq = record("review.decision", {"decision_id": decision_id, "action": action, "label": label,
                                             "reviewer": Personal(reviewer), "reason": note,
                                             "decided_us": decided_us})
            if seq is None:
                return decided, events, False
            # The reviewer id leaves the queue once its commitment is in the ledger (data minimisation).
            self._db.execute("UPDATE decisions SET recorded_seq = ?, reviewer = '' WHERE id = ?", (seq, rid))
            decided += 1
        # Every stop and resume, in order: a stop lifted before the serving process looked is evidence all the same.
        switched = self._db.execute("SELECT id, stopped, who, reason, changed_us FROM switch_events "
                                    "WHERE recorded = 0 ORDER BY id").fetchall()
        for eid, stopped, who, reason, changed in switched:
            if record("oversight.stop" if stopped else "oversight.resume",
                      {"who": Personal(who), "reason": reason, "changed_us": changed}) is None:
                return decided, events, False
            self._db.execute("UPDATE switch_events SET recorded = 1, who = '' WHERE id = ?", (eid,))
            events += 1
        return decided, events, True

    # -- stop switch
    def stop(self, *, who: str, reason: str) -> None:
        self._set(True, who, reason)

    def resume(self, *, who: str, reason: str) -> None:
        self._set(False, who, reason)

    @_locked
    def _set(self, stopped: bool, who: str, reason: str) -> None:
        if not who:
            raise InputError("stopping or resuming needs the id of who does it")
        self._db.execute("INSERT INTO switch_events (stopped, who, reason, changed_us) VALUES (?, ?, ?, ?)",
                         (int(stopped), who, reason, now_us()))

    @_locked
    def stopped(self) -> tuple[bool, str]:
        row = self._db.execute("SELECT stopped, reason FROM switch_events ORDER BY id DESC LIMIT 1").fetchone()
        return (bool(row[0]), row[1] or "") if row else (False, "")


@dataclass(frozen=True)
class ReviewPolicy:
    """Which requests go to a human: low confidence, a drift alert, a sensitive group, or a random audit sample.

    ``sensitive_groups`` names groups (``"sex=Female"``) whose rows all go to review; the serving caller labels
    each row (``serve(batch, groups=[...])``), since the group is rarely among the model's inputs.

    ``explain`` flagged rows of each window, the least confident first, are explained for their reviewer
    (Integrated Gradients through Captum, on a thread of the recorder's own; ``explain.attribution`` records
    that ``torchwitness review list`` shows); it needs ``retain_inputs=True``. ``feature_names`` name the
    attributions of tabular inputs.
    """

    min_confidence: float = 0.6
    audit_rate: float = 0.0
    on_drift: bool = True
    sensitive_groups: frozenset[str] = frozenset()
    seed: int = 0
    explain: int = 0
    feature_names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps({**self.__dict__, "sensitive_groups": sorted(self.sensitive_groups)}))
