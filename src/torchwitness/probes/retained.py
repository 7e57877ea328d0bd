"""Raw serving inputs kept by decision id (only with retention on), and their erasure and expiry.

Deleting a retained input is for good, so it is journalled like every erasure
(:mod:`torchwitness.ledger.erasure`): the intent is written to the store, the ``inputs.erasure`` or
``inputs.expiry`` record is appended and signed, and only then do the rows go, with the intent, in one
transaction. A crash at any moment leaves the rows in place or the deletion on record, and the next process to
open the run finishes what was begun.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from torchwitness.errors import InputError
from torchwitness.ledger.erasure import Journal, ledger_of, perform
from torchwitness.ledger.layout import Layout
from torchwitness.ledger.schema import register_kind
from torchwitness.ledger.transactions import write_transaction
from torchwitness.ledger.writer import now_us


def decision_id(run_id: str, stream: str, number: int) -> str:
    """The id of the ``number``-th decision of decision stream ``stream`` (one recorder) in run ``run_id``."""
    return f"{run_id}-{stream}-{number}"


def parse_decision_id(text: str) -> tuple[str, str, int]:
    """``(run id, stream, number)`` of a decision id; a clear error for anything else."""
    parts = text.rsplit("-", 2)  # the stream and the number never hold a dash; a run id might
    if len(parts) != 3 or not parts[2].isdigit() or not parts[0] or not parts[1]:
        raise InputError(f"{text!r} is not a decision id (RUNID-STREAM-NUMBER, e.g. 3f2a9c0d1e2b4a5c-7-1042)")
    return parts[0], parts[1], int(parts[2])


class RetainedInputs:
    """Raw input rows kept by decision id in ``RUN/private/inputs.sqlite`` (only with retention on; erasable), each
    with the time its retention period ends, if it has one (:func:`expire_inputs` deletes it then)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.executescript("PRAGMA journal_mode = WAL; PRAGMA secure_delete = ON; CREATE TABLE IF NOT EXISTS "
                               "inputs (decision_id TEXT PRIMARY KEY, dtype TEXT, shape TEXT, data BLOB, "
                               "expires_us INTEGER)")
        if "expires_us" not in {row[1] for row in self._db.execute("PRAGMA table_info(inputs)")}:
            # Stores written before retention periods: their rows are kept until erased, as they were.
            self._db.execute("ALTER TABLE inputs ADD COLUMN expires_us INTEGER")
        self._db.execute("CREATE INDEX IF NOT EXISTS inputs_expiry ON inputs (expires_us)")
        self.journal = Journal(self._db, "inputs", "decision_id")

    @staticmethod
    def path_for(run_dir: str | Path) -> Path:
        return Layout(Path(run_dir)).inputs

    @classmethod
    def for_run(cls, run_dir: str | Path) -> RetainedInputs:
        return cls(cls.path_for(run_dir))

    def close(self) -> None:
        self._db.close()

    def put_many(self, ids: list[str], rows: np.ndarray, expires_us: int | None = None) -> None:
        """Keep ``rows`` by decision id, until erased or, with ``expires_us``, until then."""
        with write_transaction(self._db):
            self._db.executemany("INSERT OR REPLACE INTO inputs VALUES (?, ?, ?, ?, ?)",
                                 [(d, str(r.dtype), json.dumps(r.shape), r.tobytes(), expires_us)
                                  for d, r in zip(ids, rows, strict=True)])

    def get(self, decision_id: str) -> np.ndarray:
        row = self._db.execute("SELECT dtype, shape, data FROM inputs WHERE decision_id = ?",
                               (decision_id,)).fetchone()
        if row is None:
            raise InputError(f"no retained input for decision {decision_id!r} (serve with retain_inputs=True, or "
                             "pass the input yourself)")
        return np.frombuffer(row[2], dtype=row[0]).reshape(json.loads(row[1]))

    def holds(self, decision_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM inputs WHERE decision_id = ?", (decision_id,)).fetchone() is not None

    def expired(self, at_us: int) -> list[str]:
        """The decisions whose retention period has ended by ``at_us`` (microseconds since the epoch)."""
        return [d for (d,) in self._db.execute("SELECT decision_id FROM inputs WHERE expires_us <= ?", (at_us,))]

    def delete(self, decisions: list[str]) -> None:
        """Delete rows at once, for an erasure recorded by the process that holds the run (its inbox keeps the
        record until then). Their pages are overwritten (``secure_delete``) and the log truncated."""
        with write_transaction(self._db):
            self._db.executemany("DELETE FROM inputs WHERE decision_id = ?", [(d,) for d in decisions])
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class InputsErasure(msgspec.Struct):
    """``inputs.erasure``: retained raw inputs deleted from the private side store, by decision id."""

    decisions: list[str]
    count: int
    reason: str


class InputsExpiry(msgspec.Struct):
    """``inputs.expiry``: retained raw inputs deleted because their retention period (the ``retain_seconds`` of
    the ``serve.start`` that kept them) had ended by ``at_us`` (GDPR Art. 5(1)(e)). Counted, not listed: a busy
    server expires thousands of decisions a minute."""

    at_us: int
    count: int


register_kind("inputs.erasure", InputsErasure)
register_kind("inputs.expiry", InputsExpiry)


def erase_inputs(target: Any, decisions: list[str], *,
                 reason: str = "data subject request (GDPR Art. 17)") -> list[str]:
    """Delete the retained inputs of ``decisions`` and record which (``inputs.erasure``); returns them.
    ``target``: a ``Run``, a ``Ledger`` or an :func:`~torchwitness.ledger.inbox.appending` target.

    The keyed commitments made when they were served stay in the ledger, so its verification still holds; without
    the input (or the key) they match nothing. The record is signed before any row goes (explaining a decision
    whose request lost a row is refused as tampering unless an ``inputs.erasure`` record names that row). While
    another process holds the run, the record waits, signed, in its inbox and the rows go at once."""
    for d in decisions:
        parse_decision_id(d)  # a clear error for anything that is not a decision id
    return _delete(target, lambda store: [d for d in dict.fromkeys(decisions) if store.holds(d)],
                   lambda held: ("inputs.erasure", {"decisions": held, "count": len(held), "reason": reason}))


def expire_inputs(target: Any, *, at_us: int | None = None) -> int:
    """Delete the retained inputs whose retention period has ended (by ``at_us``, default now) and record how many
    (``inputs.expiry``); returns how many. A serving recorder with ``retain_seconds`` calls this every minute;
    ``torchwitness expire`` does too, for a run no longer served. ``target`` as for :func:`erase_inputs`."""
    if not Layout(ledger_of(target).layout.root).inputs.exists():  # nothing retained: no store made to find out
        return 0
    at = now_us() if at_us is None else at_us
    return len(_delete(target, lambda store: store.expired(at),
                       lambda held: ("inputs.expiry", {"at_us": at, "count": len(held)})))


def _delete(target: Any, select: Callable[[RetainedInputs], list[str]],
            record: Callable[[list[str]], tuple[str, dict[str, Any]]]) -> list[str]:
    ledger = ledger_of(target)
    store = RetainedInputs.for_run(ledger.layout.root)
    try:
        with store.journal.serial:
            held = select(store)
            if not held:
                return []
            if getattr(ledger, "queued", False):
                ledger.record(*record(held))  # durable in the holder's inbox, signed, before the rows go
                store.delete(held)
            else:
                perform(ledger, store.journal, [record(held)], held)
    finally:
        store.close()
    return held
