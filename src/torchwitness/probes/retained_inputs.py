"""Retained raw inputs of served requests (the private, erasable side store) and checking them against the
commitments made when they were served."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from torchwitness.errors import InputError, LedgerError
from torchwitness.ledger.schema import register_kind
from torchwitness.ledger.transactions import write_transaction
from torchwitness.ledger.writer import now_us
from torchwitness.probes.inference_records import decision_id, parse_decision_id, window_columns


class RetainedInputs:
    """Raw input rows kept by decision id in ``RUN/private/inputs.sqlite`` (only with retention on; erasable), each
    with the time its retention period ends, if it has one (:meth:`expire` deletes it then)."""

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

    @staticmethod
    def path_for(run_dir: str | Path) -> Path:
        return Path(run_dir) / "private" / "inputs.sqlite"

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

    def erase(self, decisions: list[str]) -> list[str]:
        """Delete the rows of ``decisions``; returns those it held. Their pages are overwritten
        (``secure_delete``) and the write-ahead log is truncated, so no copy lingers in the file."""
        erased = [d for d in dict.fromkeys(decisions)
                  if self._db.execute("DELETE FROM inputs WHERE decision_id = ?", (d,)).rowcount > 0]
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return erased

    def expire(self, at_us: int) -> int:
        """Delete the rows whose retention period has ended by ``at_us`` (microseconds since the epoch), as
        :meth:`erase` does; returns how many."""
        n = self._db.execute("DELETE FROM inputs WHERE expires_us <= ?", (at_us,)).rowcount
        if n:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return n


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


def erase_inputs(run_dir: str | Path, decisions: list[str], *, record: Callable[..., Any],
                 reason: str = "data subject request (GDPR Art. 17)", queued: bool = False) -> list[str]:
    """Delete the retained inputs of ``decisions`` and record which were deleted (``record``: ``run.record`` or
    ``Ledger.append``); returns them. The keyed commitments made when they were served stay in the ledger, so
    its verification still holds; without the input (or the key) they match nothing.

    The record comes first: explaining a decision whose request lost a row is refused as tampering unless an
    ``inputs.erasure`` record names that row, so the rows are deleted only once the record is appended (or,
    with ``queued=True``, left for the process that holds the run, whose ``record`` gives no seq yet). A record
    the ledger dropped (a full queue under ``on_full="drop"``) deletes nothing and raises."""
    for d in decisions:
        parse_decision_id(d)  # a clear error for anything that is not a decision id
    store = RetainedInputs.for_run(run_dir)
    try:
        held = [d for d in dict.fromkeys(decisions) if store.holds(d)]
        if held:
            seq = record("inputs.erasure", {"decisions": held, "count": len(held), "reason": reason})
            if seq is None and not queued:
                raise LedgerError("the ledger dropped the erasure record (its queue is full): nothing was deleted; "
                                  "try again")
            store.erase(held)
    finally:
        store.close()
    return held


def expire_inputs(run_dir: str | Path, *, record: Callable[..., Any], at_us: int | None = None) -> int:
    """Delete the retained inputs whose retention period has ended and record how many (``inputs.expiry``);
    returns how many. A serving recorder with ``retain_seconds`` calls this every minute; ``torchwitness expire``
    does too, for a run no longer served."""
    path = RetainedInputs.path_for(run_dir)
    if not path.exists():  # nothing retained: not creating the store to find that out
        return 0
    at = now_us() if at_us is None else at_us
    store = RetainedInputs(path)
    try:
        n = store.expire(at)
    finally:
        store.close()
    if n:
        record("inputs.expiry", {"at_us": at, "count": n})
    return n


def verified_input(store: RetainedInputs, record: dict[str, Any], decision: str,
                   fingerprint: Callable[[bytes], str], erased: Collection[str] = ()) -> tuple[np.ndarray, bool]:
    """The retained row of ``decision`` and whether it was checked against the commitment made when it was
    served (``record``: the ``inference`` record that holds the decision; ``fingerprint``: the run's keyed
    fingerprint, ``Ledger.personal.fingerprint``).

    The side store is private and mutable; the ledger is not. A row whose request was committed is checked: the
    request's retained rows, in order, must hash to the recorded commitment (or the row to its own, with
    ``fingerprint="row"``). A mismatch raises :class:`~torchwitness.errors.InputError` naming the record: the
    retained input was changed after serving, and explaining it would explain another input. Rows of requests
    that were not committed come back unchecked (``False``), as do those whose request lost another row to a
    recorded erasure since (``erased``: the decisions ``inputs.erasure`` records name; a request's commitment
    covers all its rows); a row missing without one is a change to the side store, refused like an edit.
    """
    data = record["data"]
    _, stream, number = parse_decision_id(decision)
    cols = window_columns(data)
    request = int(np.searchsorted(cols["first_decisions"], number, side="right")) - 1
    row = store.get(decision)
    committed = cols["committed"].tolist()
    if data["fingerprint"] == "none" or request not in committed:
        return row, False
    k = committed.index(request)
    first, rows = int(cols["first_decisions"][request]), int(cols["rows"][request])
    if data["fingerprint"] == "row":
        offset = int(sum(cols["rows"][i] for i in committed[:k]))
        expected, served = data["inputs"][offset + number - first], row.tobytes()
    else:
        expected = data["inputs"][k]
        siblings = [decision_id(record["run"], stream, first + j) for j in range(rows)]
        try:
            served = b"".join(store.get(d).tobytes() for d in siblings)
        except InputError:
            missing = [d for d in siblings if d != decision and not store.holds(d)]
            if set(missing) <= set(erased):  # erased on request since: the request's commitment cannot be checked
                return row, False
            raise InputError(f"the retained inputs of decision {decision!r}'s request are incomplete: "
                             f"{missing[0]} is gone without an erasure record (inference record seq "
                             f"{record['seq']}): the side store was changed after serving") from None
    if fingerprint(served) != expected:
        raise InputError(f"the retained input of decision {decision!r} does not match the commitment made when it "
                         f"was served (inference record seq {record['seq']}): it was changed after serving")
    return row, True
