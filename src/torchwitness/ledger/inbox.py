"""Appending to a run that another process holds open: the ledger's inbox.

Only one process appends to a ledger (it holds ``.writer.lock``). A deployment keeps its run open for as long as
it serves, months perhaps, while records belong in that run from elsewhere: a serious incident, a retention
declaration, an erasure a data subject asked for. :func:`appending` appends directly when the ledger is free;
when another process holds it, the operation waits in ``RUN/private/inbox.sqlite`` and the holder performs it:
an open :class:`~torchwitness.ledger.writer.Ledger` looks at its inbox when it opens (before anything else is
appended), every ``inbox_seconds`` (one second by default) and when it closes. The submitting process waits a
few seconds for the outcome (the record's sequence number); if the holder lets go meanwhile, it opens the run
itself, which performs the operation; otherwise it leaves the operation queued.

Only a holder of the run's signing key may leave an operation, as only a holder may open the ledger: each is
signed with that key (Ed25519) over the run's origin, a nonce and its time, and the holder performs nothing whose
signature does not verify against the run's public key, so write access to the private folder alone gets no
record signed, and an operation signed for one run is refused by another. The holder refuses operations queued
more than a year (366 days) before and remembers those it performed as long (in the inbox, and in memory while it
runs), so one put back is not performed again; what remains is that someone able to write the private folder who
copied an operation while it waited could have a restarted holder perform it a second time within that year (a
duplicate of what a key holder asked for, never a new record). Delivery is at least once: a holder killed
between appending an operation's record and marking it done appends it again when the run is next opened (a
duplicate, never a loss).

Personal values wait in the inbox as given (the private folder is the place for them) and are overwritten once
performed (``secure_delete``, and the write-ahead log truncated), as the review queue does with reviewer ids.

Example::

    from torchwitness.ledger.inbox import appending

    with appending("runs/serve") as target:   # works whether or not a server holds runs/serve
        seq = target.record("note", {"text": "model card reviewed"})
    print("queued" if seq is None else f"seq {seq}")
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchwitness.errors import InputError, LedgerBusy, LedgerError
from torchwitness.ledger.encoding import Personal
from torchwitness.ledger.keys import SigningKey
from torchwitness.ledger.layout import Layout, read_manifest
from torchwitness.ledger.personal import PersonalStore
from torchwitness.ledger.transactions import write_transaction

if TYPE_CHECKING:
    from torchwitness.ledger.writer import Ledger

_SCHEMA = """
PRAGMA journal_mode = WAL;
PRAGMA secure_delete = ON;
CREATE TABLE IF NOT EXISTS ops (
    id INTEGER PRIMARY KEY AUTOINCREMENT, nonce TEXT NOT NULL UNIQUE, op TEXT NOT NULL, body TEXT, signature BLOB,
    created_us INTEGER NOT NULL, done INTEGER NOT NULL DEFAULT 0, result INTEGER, error TEXT);
"""
_PERSONAL = "$inbox.personal"  # a value to commit, as the submitter gave it; never a key of a record's data
_VALID_US = 366 * 86_400 * 10**6  # an operation older than this is refused, and a performed one remembered as long


def _encode(body: dict[str, Any]) -> str:
    def personal(value: Any) -> Any:
        if isinstance(value, Personal):
            return {_PERSONAL: value.value}
        if hasattr(value, "tolist") and hasattr(value, "ndim"):  # numpy values and CPU tensors, as append takes
            return value.tolist()
        raise InputError(f"a {type(value).__name__} cannot wait in a run's inbox: queue plain JSON values "
                         "(numbers, strings, lists, dicts) and Personal values")

    return json.dumps(body, default=personal)


def _decode(text: str) -> dict[str, Any]:
    return json.loads(text, object_hook=lambda d: Personal(d[_PERSONAL]) if len(d) == 1 and _PERSONAL in d else d)


def _signed(origin: str, nonce: str, created_us: int, op: str, body: str) -> bytes:
    # The run's origin and a nonce are signed too: a signed operation is good for this run, once.
    return f"torchwitness inbox\n{origin}\n{nonce}\n{created_us}\n{op}\n{body}".encode()


class Inbox:
    """The operations other processes left for the holder of one run's ledger."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise LedgerError(f"the run's inbox {path} is unreadable: {e}") from None
        # What this holder performed, by nonce: a row whose marking failed, or one put back after it was done, is
        # not performed twice by this process.
        self._performed: dict[str, tuple[int, int | None, str | None]] = {}

    @classmethod
    def for_run(cls, root: str | Path) -> Inbox:
        return cls(Layout(Path(root)).inbox)

    def close(self) -> None:
        self._db.close()

    def put(self, op: str, body: dict[str, Any], key: SigningKey, origin: str) -> int:
        """Queue ``op`` (``"record"`` or ``"erase"``) for the run ``origin``, signed with its ``key``; returns its
        id."""
        from torchwitness.ledger.writer import now_us

        text = _encode(body)  # refused here, in the submitter, rather than failing in the holder
        nonce, created = secrets.token_hex(16), now_us()
        signature = key.sign(_signed(origin, nonce, created, op, text))
        return int(self._db.execute("INSERT INTO ops (nonce, op, body, signature, created_us) VALUES (?, ?, ?, ?, ?)",
                                    (nonce, op, text, signature, created)).lastrowid)

    def outcome(self, op_id: int) -> tuple[bool, int | None, str | None]:
        """``(done, result, error)`` of a queued operation."""
        row = self._db.execute("SELECT done, result, error FROM ops WHERE id = ?", (op_id,)).fetchone()
        if row is None:
            raise LedgerError(f"operation {op_id} is not in the inbox {self.path}")
        return bool(row[0]), row[1], row[2]

    def pending(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM ops WHERE done = 0").fetchone()[0])

    def drain(self, ledger: Ledger) -> int:
        """Perform every pending operation on ``ledger`` (which this process holds), in the order queued."""
        from torchwitness.ledger.writer import now_us

        rows = self._db.execute("SELECT id, nonce, op, body, signature, created_us FROM ops WHERE done = 0 "
                                "ORDER BY id").fetchall()
        if not rows:
            return 0
        now = now_us()
        outcomes = []
        for op_id, nonce, op, body, signature, created in rows:
            if nonce not in self._performed:
                self._performed[nonce] = (created, *_perform(ledger, nonce, op, body, signature, created, now))
            outcomes.append((*self._performed[nonce][1:], op_id))
        # Marked done only once their records are written: a crash in between repeats them, never loses them.
        ledger.flush()
        with write_transaction(self._db):
            self._db.executemany("UPDATE ops SET done = 1, result = ?, error = ?, body = NULL WHERE id = ?", outcomes)
            self._db.execute("DELETE FROM ops WHERE done = 1 AND created_us < ?", (now - _VALID_US,))
        self._performed = {n: v for n, v in self._performed.items() if v[0] >= now - _VALID_US}
        # Until checkpointed and truncated, the write-ahead log still holds the bodies with their personal values.
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return len(rows)


def _perform(ledger: Ledger, nonce: str, op: str, body: str, signature: bytes | None, created_us: int,
             now_us: int) -> tuple[int | None, str | None]:
    # Another process's operation must never stop the holder (a server, say): whatever fails is reported to the
    # submitter as the operation's error.
    if not signature or not ledger.public_key.verify(bytes(signature),
                                                     _signed(ledger.origin, nonce, created_us, op, body)):
        return None, "not signed with this run's key for this run: refused"
    if created_us < now_us - _VALID_US:
        return None, "queued more than a year ago: refused (submit it again)"
    try:
        args = _decode(body)
        if op == "record":
            return ledger.append(args["kind"], args["data"], args["step"]), None
        if op == "erase":
            return ledger.erase(values=args["values"], commitments=args["commitments"], reason=args["reason"],
                                also=[tuple(r) for r in args.get("also", ())]), None
        return None, f"unknown operation {op!r}"
    except Exception as e:  # see above
        return None, str(e) or type(e).__name__


class _Direct:
    """Appends to a ledger this process holds."""

    queued = False

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.layout = ledger.layout
        self.completed_erasures = ledger.completed_erasures  # what opening the ledger finished

    @property
    def personal(self) -> PersonalStore:
        return self.ledger.personal

    def record(self, kind: str, data: Any = None, step: int | None = None) -> int | None:
        return self.ledger.append(kind, data, step)

    def erase(self, *, values: list[Any] = (), commitments: list[str] = (), reason: str = "",
              also: list[tuple[str, Any]] = ()) -> int | None:
        return self.ledger.erase(values=list(values), commitments=list(commitments), reason=reason, also=also)


class _Queued:
    """Leaves operations in the inbox of a ledger another process holds, and waits a while for each outcome."""

    queued = True

    def __init__(self, root: Path, timeout: float, manifest: dict[str, Any], key_dir: Path | None) -> None:
        from torchwitness.ledger.writer import Ledger

        self.completed_erasures: list[Any] = []  # the holder finishes interrupted erasures, not this process
        self._root = root
        self.layout = Layout(root)
        self._origin = str(manifest["origin"])
        self._key_dir = key_dir
        self._key = Ledger.signing_key_for(manifest, self.layout, key_dir)
        self._inbox = Inbox(self.layout.inbox)
        self._timeout = timeout
        self._personal: PersonalStore | None = None

    @property
    def personal(self) -> PersonalStore:
        if self._personal is None:
            self._personal = PersonalStore(self.layout.personal)
        return self._personal

    def record(self, kind: str, data: Any = None, step: int | None = None) -> int | None:
        return self._submit("record", {"kind": kind, "data": data, "step": step})

    def erase(self, *, values: list[Any] = (), commitments: list[str] = (), reason: str = "",
              also: list[tuple[str, Any]] = ()) -> int | None:
        return self._submit("erase", {"values": list(values), "commitments": list(commitments), "reason": reason,
                                      "also": [list(r) for r in also]})

    def _submit(self, op: str, body: dict[str, Any]) -> int | None:
        op_id = self._inbox.put(op, body, self._key, self._origin)
        deadline, opened = time.monotonic() + self._timeout, False
        while True:
            done, result, error = self._inbox.outcome(op_id)
            if error is not None:
                raise LedgerError(f"the process holding {self._root} could not {op} it: {error}")
            if done:
                return result
            if not opened and self._open_if_free():  # once: a marking that keeps failing must not repeat it
                opened = True
                continue
            if time.monotonic() >= deadline:
                return None  # still queued: the holder performs it when it next looks, or when it closes
            time.sleep(0.05)

    def _open_if_free(self) -> bool:
        """Open the ledger if its holder has let go (its last look may have come just before this operation was
        queued): opening performs what is queued. False while it is held."""
        from torchwitness.ledger.writer import Ledger

        fd = os.open(self.layout.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:  # a look at the lock, cheap enough for every poll; opening the ledger reads its whole index
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)  # closing releases the lock, if taken
        try:
            Ledger.open(self._root, key_dir=self._key_dir).close()
        except LedgerBusy:  # a new holder came first: it performs the operation
            return False
        return True

    def close(self) -> None:
        self._inbox.close()
        if self._personal is not None:
            self._personal.close()


@contextmanager
def appending(root: str | Path, *, key_dir: Path | None = None, timeout: float = 5.0) -> Iterator[Any]:
    """A target for appending to the run folder ``root``, whether or not another process holds its ledger.

    The target has ``record(kind, data, step)`` (returns the seq), ``erase(values=, commitments=, reason=,
    also=)`` (returns how many were erased; see :meth:`~torchwitness.ledger.writer.Ledger.erase`),
    ``completed_erasures`` (those a crash had interrupted, which opening the ledger here finished), ``personal``
    (the run's side store, e.g. its input fingerprint key), ``layout`` (where the run's files are) and ``queued``
    (True when another process holds the ledger). Queued operations return their result once the holder has
    performed them, or None when it has not within ``timeout`` seconds: it will, when it next looks at its inbox
    or when it closes; a failure in the holder raises :class:`~torchwitness.errors.LedgerError` here. A ledger
    opened here is closed, and a checkpoint signed, on exit (``key_dir``: where its signing key lives).
    """
    from torchwitness.ledger.writer import Ledger

    root = Path(root)
    manifest = read_manifest(root)
    try:
        ledger = Ledger.open(root, key_dir=key_dir)
    except LedgerBusy:
        queued = _Queued(root, timeout, manifest, key_dir)
        try:
            yield queued
        finally:
            queued.close()
        return
    with ledger:
        yield _Direct(ledger)
