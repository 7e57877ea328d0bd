"""The erasable side store behind personal values (crypto-shredding).

A personal value ``v`` enters the ledger only as ``hmac-sha256:HMAC(salt_v, canonical(v))``. The per-value
salt (and the cleartext, only when retention is on) live in an SQLite side store beside the ledger, never in
the hashed records. Deleting a value's row makes every commitment to it unlinkable for good, while the Merkle
tree, which hashes only the commitments, still verifies.

Rows are found again by a lookup tag ``HMAC(lookup_key, canonical(v))`` that never leaves the side store: a
ledger holder without the side store cannot test guesses against the records.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from torchwitness.errors import LedgerError
from torchwitness.ledger.canonical import canonical_json
from torchwitness.ledger.erasure import Intent, Journal
from torchwitness.ledger.transactions import write_transaction

COMMITMENT_PREFIX = "hmac-sha256:"
FINGERPRINT_PREFIX = "hmac-sha256-128:"

_SCHEMA = """
PRAGMA secure_delete = ON;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS personal (
    tag TEXT PRIMARY KEY,
    salt BLOB NOT NULL,
    commitment TEXT NOT NULL,
    cleartext TEXT,
    created_us INTEGER NOT NULL
);
"""


def commitment(salt: bytes, value: Any) -> str:
    """The commitment string for ``value`` under ``salt``; anyone holding both can re-check it."""
    return COMMITMENT_PREFIX + hmac.new(salt, canonical_json(value), hashlib.sha256).hexdigest()


class PersonalStore:
    """Salts (and optionally cleartexts) for personal values of one run. Thread-safe."""

    def __init__(self, path: Path, *, retain: bool = False) -> None:
        self.path = path
        self.retain = retain
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise LedgerError(f"personal-data side store {path} is unreadable: {e}") from None
        self._lock = threading.Lock()
        # Erasure by commitment looks rows up by it; a read-only copy of an older store is read without it.
        with contextlib.suppress(sqlite3.OperationalError):
            self._db.execute("CREATE INDEX IF NOT EXISTS personal_commitment ON personal (commitment)")
        row = self._db.execute("SELECT value FROM meta WHERE key = 'lookup_key'").fetchone()
        if row is None:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('lookup_key', ?)", (os.urandom(32),))
            row = self._db.execute("SELECT value FROM meta WHERE key = 'lookup_key'").fetchone()
        self._lookup_key: bytes = row[0]
        # A separate key for input fingerprints, so matching inputs never reveals personal-value tags.
        self._fingerprint_key = hmac.new(self._lookup_key, b"torchwitness input fingerprint", hashlib.sha256).digest()
        # HMAC's two keyed pad blocks, hashed once (RFC 2104; the 32-byte key is shorter than SHA-256's block).
        block = self._fingerprint_key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self._cache: dict[str, str] = {}
        self.journal = Journal(self._db, "personal", "commitment", self._lock, forget=self._forget)

    def fingerprint(self, data: bytes | memoryview) -> str:
        """A keyed 128-bit fingerprint of raw bytes (a served request or row): matchable by the key holder only.

        HMAC-SHA256 truncated to 128 bits (RFC 2104 section 5), the same bytes as ``hmac.digest``: copies of the
        pre-keyed inner and outer hashes, which skips the per-call key setup that dominates for the small requests
        a server commits one at a time (~30 % faster for a 416-byte request, measured). ``data`` is any
        C-contiguous buffer (bytes, a memoryview, a numpy array); large inputs hash without the GIL.
        """
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return FINGERPRINT_PREFIX + outer.digest()[:16].hex()

    def _tag(self, value: Any) -> str:
        return hmac.new(self._lookup_key, canonical_json(value), hashlib.sha256).hexdigest()

    def commit(self, value: Any) -> str:
        """The commitment for ``value``, stable within this run until the value is erased."""
        tag = self._tag(value)
        if (cached := self._cache.get(tag)) is not None:
            return cached
        with self._lock:
            row = self._db.execute("SELECT commitment FROM personal WHERE tag = ?", (tag,)).fetchone()
            if row is None:
                salt = os.urandom(32)
                c = commitment(salt, value)
                clear = canonical_json(value).decode() if self.retain else None
                self._db.execute("INSERT INTO personal VALUES (?, ?, ?, ?, ?)",
                                 (tag, salt, c, clear, time.time_ns() // 1000))
            else:
                c = row[0]
            self._cache[tag] = c
            return c

    def commit_many(self, values: list[Any]) -> list[str]:
        """Commitments for many values in one transaction (100k subjects take well under a second)."""
        tags = [self._tag(v) for v in values]
        out: list[str | None] = [self._cache.get(t) for t in tags]
        missing = [i for i, c in enumerate(out) if c is None]
        if missing:
            with self._lock, write_transaction(self._db):
                for i in missing:
                    row = self._db.execute("SELECT commitment FROM personal WHERE tag = ?", (tags[i],)).fetchone()
                    if row is None:
                        salt = os.urandom(32)
                        c = commitment(salt, values[i])
                        clear = canonical_json(values[i]).decode() if self.retain else None
                        self._db.execute("INSERT INTO personal VALUES (?, ?, ?, ?, ?)",
                                         (tags[i], salt, c, clear, time.time_ns() // 1000))
                    else:
                        c = row[0]
                    self._cache[tags[i]] = c
                    out[i] = c
        return out  # type: ignore[return-value]

    def lookup(self, value: Any) -> str | None:
        """The live commitment for ``value``, or None if it was never recorded or has been erased."""
        row = self._db.execute("SELECT commitment FROM personal WHERE tag = ?", (self._tag(value),)).fetchone()
        return row[0] if row else None

    def opening(self, value: Any) -> tuple[str, bytes] | None:
        """(commitment, salt) for ``value``: what a data subject needs to check a record refers to them."""
        row = self._db.execute("SELECT commitment, salt FROM personal WHERE tag = ?",
                               (self._tag(value),)).fetchone()
        return (row[0], row[1]) if row else None

    def tag(self, value: Any) -> str:
        """The lookup tag of ``value`` (it never enters a record): what recognises a retried erasure."""
        return self._tag(value)

    def locate(self, values: list[Any], commitments: list[str]) -> dict[str, str]:
        """``{commitment: tag}`` of the live rows behind ``values`` and ``commitments`` (what an erasure deletes)."""
        tags = [self._tag(v) for v in values]
        with self._lock:
            found = {c: t for t in tags
                     for (c,) in self._db.execute("SELECT commitment FROM personal WHERE tag = ?", (t,))}
            found.update({c: t for c in commitments
                          for (t,) in self._db.execute("SELECT tag FROM personal WHERE commitment = ?", (c,))})
        return found

    def _forget(self, intent: Intent) -> None:
        # Called by the journal under the store's lock, once the intent's rows are deleted.
        self._cache = {t: c for t, c in self._cache.items() if t not in intent.tags}

    def live_commitments(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT commitment FROM personal")}

    def close(self) -> None:
        self._db.close()
