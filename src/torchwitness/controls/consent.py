"""``ConsentRegistry``: consent per subject and purpose (GDPR Art. 6(1)(a), 7), with its history in the ledger.

Subjects enter records only as keyed, erasable commitments (``Personal``); bulk grants store the commitment
list as a blob and its Merkle root in the record. Revocation is recorded at once and takes effect at the next
epoch of every :class:`~torchwitness.controls.consented_data.ConsentedDataset` (Art. 7(3): it does not undo
processing already done).

>>> import tempfile, os, torchwitness as tw
>>> os.environ["TORCHWITNESS_KEY_DIR"] = tempfile.mkdtemp()
>>> with tw.Run(tempfile.mkdtemp() + "/run") as run:
...     reg = ConsentRegistry(run)
...     reg.grant("alice", "training", version="v1")
...     reg.revoke("alice", "training", at=10.0)
...     reg.allowed(["alice"], "training", at=5.0).tolist(), reg.allowed(["alice"], "training", at=20.0).tolist()
([True], [False])
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from torchwitness.errors import InputError
from torchwitness.ledger.encoding import Personal
from torchwitness.ledger.merkle import MerkleTree, leaf_hash
from torchwitness.ledger.schema import register_kind

if TYPE_CHECKING:
    from torchwitness.run import Run


class ConsentGrant(msgspec.Struct):
    subject: dict[str, str]
    purpose: str
    version: str
    start: float | None
    end: float | None


class ConsentGrantBatch(msgspec.Struct):
    """Many subjects at once: their sorted commitments live in blob ``commitments``, Merkle root ``root``."""

    purpose: str
    version: str
    start: float | None
    end: float | None
    count: int
    root: str
    commitments: str


class ConsentRevoke(msgspec.Struct):
    subject: dict[str, str]
    purpose: str
    at: float
    effective: str


for _kind, _struct in {"consent.grant": ConsentGrant, "consent.grant_batch": ConsentGrantBatch,
                       "consent.revoke": ConsentRevoke}.items():
    register_kind(_kind, _struct)


@dataclass
class _Consent:
    version: str
    start: float
    end: float
    revoked_at: float = math.inf


def commitment_root(commitments: Sequence[str]) -> str:
    """RFC 9162 Merkle root over sorted commitment strings: a compact, order-free digest of a subject set."""
    return "sha256:" + MerkleTree([leaf_hash(c.encode()) for c in sorted(commitments)]).root().hex()


class ConsentRegistry:
    """Grants and revocations per (subject, purpose), each with a validity window and consent-text version.

    Without a ``run`` the registry works in memory only (for tests and dry runs); with one, every change is a
    ledger record.
    """

    def __init__(self, run: Run | None = None) -> None:
        self.run = run
        self._by_purpose: dict[str, dict[Any, _Consent]] = {}

    def _record(self, kind: str, data: Any) -> None:
        if self.run is not None:
            self.run.record(kind, data)

    def grant(self, subject: Any, purpose: str, *, version: str, start: float | None = None,
              end: float | None = None) -> None:
        """Record consent of one subject for one purpose, valid in ``[start, end)`` (Unix seconds)."""
        self._set(subject, purpose, version, start, end)
        self._record("consent.grant", {"subject": Personal(subject), "purpose": purpose, "version": version,
                                       "start": start, "end": end})

    def grant_many(self, subjects: Sequence, purpose: str, *, version: str, start: float | None = None,
                   end: float | None = None) -> None:
        """One record for many subjects (100k in about a second): commitments as a blob, their root inline."""
        subjects = list(subjects)
        for s in subjects:
            self._set(s, purpose, version, start, end)
        if self.run is None:
            return
        commitments = sorted(set(self.run.ledger.personal.commit_many(subjects)))
        blob = self.run.ledger.put_blob("\n".join(commitments).encode())
        self._record("consent.grant_batch", {"purpose": purpose, "version": version, "start": start, "end": end,
                                             "count": len(commitments), "root": commitment_root(commitments),
                                             "commitments": blob})

    def _set(self, subject: Any, purpose: str, version: str, start: float | None, end: float | None) -> None:
        if not purpose or not version:
            raise InputError("consent needs a purpose and the version of the consent text")
        lo, hi = -math.inf if start is None else float(start), math.inf if end is None else float(end)
        if hi <= lo:
            raise InputError(f"consent window is empty: start {start} >= end {end}")
        self._by_purpose.setdefault(purpose, {})[subject] = _Consent(version, lo, hi)

    def revoke(self, subject: Any, purpose: str, *, at: float | None = None) -> None:
        """Withdraw consent from ``at`` (default now); datasets stop serving the subject from their next epoch."""
        at = time.time() if at is None else float(at)
        consent = self._by_purpose.get(purpose, {}).get(subject)
        if consent is None:
            raise InputError("no consent to revoke for this subject and purpose")
        consent.revoked_at = min(consent.revoked_at, at)
        self._record("consent.revoke", {"subject": Personal(subject), "purpose": purpose, "at": at,
                                        "effective": "next_epoch"})

    def purposes(self, subject: Any) -> list[str]:
        return sorted(p for p, table in self._by_purpose.items() if subject in table)

    def status(self, subjects: Sequence, purpose: str, *, at: float | None = None) -> np.ndarray:
        """Per subject: 0 consented, 1 no consent for this purpose, 2 revoked, 3 outside the validity window."""
        at = time.time() if at is None else float(at)
        table = self._by_purpose.get(purpose, {})
        out = np.empty(len(subjects), dtype=np.int8)
        for i, s in enumerate(subjects):
            c = table.get(s)
            out[i] = 1 if c is None else 2 if c.revoked_at <= at else 0 if c.start <= at < c.end else 3
        return out

    def allowed(self, subjects: Sequence, purpose: str, *, at: float | None = None) -> np.ndarray:
        return self.status(subjects, purpose, at=at) == 0
