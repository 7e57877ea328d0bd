"""Crash-atomic erasure: a write-ahead intent, then the signed record, then the deletion.

Erasing personal data (crypto-shredding a salt) or retained inputs (deleting a row) destroys something for good,
and the ledger must say so: GDPR Art. 17 evidence that is lost with a crash is lost forever. Three steps make it
atomic whatever moment a SIGKILL lands:

1. **Intent.** The records that will document the erasure and the keys of the rows to delete are written to an
   ``erasure_intents`` table in the side store's own SQLite database, in one committed (synced) transaction.
2. **Record.** The records are appended and a checkpoint is signed over them (segments synced first): the
   erasure is on record, signed, before anything is deleted.
3. **Delete.** The rows and the intent go in one transaction: never one without the other.

A crash before 1 leaves nothing done; after 1, the intent is finished by the next process that opens the ledger
(:meth:`~torchwitness.ledger.writer.Ledger.open`, hence also a retried ``torchwitness erase``): it appends the
intent's records that are not in the ledger yet (it looks only at the records from the intent's ``floor``, the
ledger's size when the intent was written, so a crash between 2 and 3 never records an erasure twice), signs,
and deletes. So at every moment either nothing was deleted or the erasure is recorded.

Records in an intent are plain JSON (personal values already as ``{"$personal": commitment}``): they are compared
with the ledger's records as parsed back.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchwitness.errors import LedgerError
from torchwitness.ledger.layout import read_manifest
from torchwitness.ledger.transactions import write_transaction

if TYPE_CHECKING:
    from torchwitness.ledger.writer import Ledger

_SCHEMA = ("CREATE TABLE IF NOT EXISTS erasure_intents (id INTEGER PRIMARY KEY AUTOINCREMENT, "
           "floor INTEGER NOT NULL, records TEXT NOT NULL, keys TEXT NOT NULL, tags TEXT NOT NULL)")


@dataclass(frozen=True)
class Intent:
    """One erasure that was begun: the records documenting it and the keys of the rows it deletes."""

    id: int
    floor: int  # the ledger's size when it was begun: its records have this seq or later
    records: list[tuple[str, Any]]
    keys: list[str]
    tags: list[str] = field(default_factory=list)  # lookup tags of erased personal values (to recognise a retry)


@dataclass(frozen=True)
class Completed:
    """An erasure an earlier process began and this one finished."""

    store: str  # "personal" (salts of personal values) or "inputs" (retained serving inputs)
    keys: list[str]
    tags: list[str]
    records: list[tuple[str, Any]]  # what documents it
    appended: int  # records this process appended for it (0: the crash came after they were written)
    seq: int | None  # the seq of its last record


class Journal:
    """The erasure intents of one side store, in that store's own database, so that deleting the rows and
    dropping the intent commit together. ``table``/``column``: where the rows to delete live, by key."""

    def __init__(self, db: sqlite3.Connection, table: str, column: str, lock: threading.Lock | None = None, *,
                 forget: Callable[[Intent], None] | None = None) -> None:
        self._db, self._table, self._column, self._forget = db, table, column, forget
        self._lock = lock or threading.Lock()
        self.serial = threading.RLock()  # one erasure at a time: two of the same value would record it twice

    def begin(self, floor: int, records: list[tuple[str, Any]], keys: list[str], tags: list[str] = ()) -> Intent:
        """Write the intent (committed before anything is appended or deleted). Its records are appended as
        stored (parsed back from their JSON), so a later process compares like with like."""
        text = json.dumps([list(r) for r in records], allow_nan=False)
        with self._lock, write_transaction(self._db):
            # Made on first use: a read-only copy of a store that never erased anything is read without it.
            self._db.execute(_SCHEMA)
            cur = self._db.execute("INSERT INTO erasure_intents (floor, records, keys, tags) VALUES (?, ?, ?, ?)",
                                   (floor, text, json.dumps(keys), json.dumps(list(tags))))
        return Intent(int(cur.lastrowid), floor, [(k, d) for k, d in json.loads(text)], list(keys), list(tags))

    def pending(self) -> list[Intent]:
        with self._lock:
            try:
                rows = self._db.execute("SELECT id, floor, records, keys, tags FROM erasure_intents "
                                        "ORDER BY id").fetchall()
            except sqlite3.OperationalError:  # no such table: nothing was ever begun
                return []
        return [Intent(i, f, [(k, d) for k, d in json.loads(r)], json.loads(ks), json.loads(t))
                for i, f, r, ks, t in rows]

    def finish(self, intent: Intent) -> int:
        """Delete the intent's rows and the intent itself in one transaction; returns how many rows went."""
        with self._lock, write_transaction(self._db):
            deleted = sum(self._db.execute(f"DELETE FROM {self._table} WHERE {self._column} = ?", (k,)).rowcount
                          for k in intent.keys)
            self._db.execute("DELETE FROM erasure_intents WHERE id = ?", (intent.id,))
            if self._forget is not None:
                self._forget(intent)
        # A store in write-ahead-log mode keeps deleted rows in its log until checkpointed: truncate it.
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted


def ledger_of(target: Any) -> Any:
    """The ledger of a ``Run`` or of an :func:`~torchwitness.ledger.inbox.appending` target that holds it; a
    ``Ledger`` or a queued target itself."""
    return getattr(target, "ledger", target)


def erase_personal(ledger: Ledger, values: list[Any], commitments: list[str], reason: str,
                   also: list[tuple[str, Any]] = ()) -> int:
    """Crypto-shred personal values (by value or by commitment) and record an ``erasure`` record naming their
    commitments (already public in the ledger), after the records in ``also`` (plain JSON: what the same request
    also documents, e.g. revoked consents); returns how many values were erased (0: none is in the store)."""
    store = ledger.personal
    with store.journal.serial:
        ledger.flush()  # queued records take their commitments before the salts go
        found = store.locate(list(values), list(commitments))
        if not found:
            return 0
        erased = sorted(found)
        records = [*also, ("erasure", {"commitments": erased, "count": len(erased), "reason": reason})]
        perform(ledger, store.journal, records, erased, sorted(set(found.values())))
    return len(erased)


def perform(ledger: Ledger, journal: Journal, records: list[tuple[str, Any]], keys: list[str],
            tags: list[str] = ()) -> int | None:
    """Delete ``keys`` from ``journal``'s store, documented by ``records``, crash-atomically (see the module);
    returns the seq of the last record."""
    with journal.serial:
        intent = journal.begin(ledger.next_seq, records, keys, tags)
        seq = _append(ledger, intent.records)
        journal.finish(intent)
    return seq


def finish_interrupted(ledger: Ledger) -> list[Completed]:
    """Finish every erasure an earlier holder of ``ledger`` began and did not finish, in the personal store and
    the retained inputs: append the records not in the ledger yet, sign, delete. Run at open, before anything
    else is appended. One that cannot be finished now (a damaged store) is warned about and left: its intent
    stays, so nothing is lost and the next open tries again."""
    done = []
    try:
        if has_pending(ledger.layout.personal):
            done += _finish(ledger, ledger.personal.journal, "personal")
        if has_pending(ledger.layout.inputs):
            db = sqlite3.connect(ledger.layout.inputs, timeout=30, isolation_level=None)
            try:
                done += _finish(ledger, Journal(db, "inputs", "decision_id"), "inputs")
            finally:
                db.close()
    except Exception as e:
        warnings.warn(f"torchwitness: cannot finish an interrupted erasure in {ledger.layout.root} now (it is "
                      f"tried again when the run is next opened): {e}", RuntimeWarning, stacklevel=3)
    return done


def _finish(ledger: Ledger, journal: Journal, store: str) -> list[Completed]:
    done = []
    with journal.serial:
        for intent in journal.pending():
            missing = _unrecorded(ledger, intent)
            seq = _append(ledger, missing) if missing else None
            journal.finish(intent)
            done.append(Completed(store, intent.keys, intent.tags, intent.records, len(missing), seq))
    return done


def has_pending(path: Path) -> bool:
    """Whether the side store at ``path`` holds an interrupted erasure (read-only: a store is never created or
    written to find out)."""
    if not path.is_file():
        return False
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)  # as_uri: quotes # and ?
    except sqlite3.Error:
        return False
    try:
        return db.execute("SELECT 1 FROM erasure_intents LIMIT 1").fetchone() is not None
    except sqlite3.Error:  # no such table: never journalled an erasure
        return False
    finally:
        db.close()


def _append(ledger: Ledger, records: list[tuple[str, Any]]) -> int | None:
    seq = None
    for kind, data in records:
        seq = ledger.append(kind, data)
        if seq is None:  # dropped (on_full="drop"): the intent stays, and the next open finishes it
            raise LedgerError("the ledger dropped an erasure record (its queue is full): nothing was deleted yet; "
                              "the erasure is finished when the run is next opened, or try again")
    ledger.checkpoint()  # on record, signed (and synced) before anything is deleted
    return seq


def _unrecorded(ledger: Ledger, intent: Intent) -> list[tuple[str, Any]]:
    """The intent's records not yet in the ledger. They were appended in order, so those present are a prefix."""
    wanted = list(intent.records)
    for record in _records_since(ledger, intent.floor):
        if wanted and record["kind"] == wanted[0][0] and record["data"] == wanted[0][1]:
            wanted.pop(0)
    return wanted


def _records_since(ledger: Ledger, floor: int) -> Iterator[dict[str, Any]]:
    ledger.flush()
    per = int(read_manifest(ledger.layout.root)["segment_records"])
    number = floor // per
    while (path := ledger.layout.segment(number)).exists():
        for line in path.read_bytes().split(b"\n"):
            if line:
                record = json.loads(line)
                if record["seq"] >= floor:
                    yield record
        number += 1
