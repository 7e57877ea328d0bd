"""What is kept of conversation content (prompts, completions, agent inputs and outputs): zero retention by default.

By default a text field enters a record only as a keyed HMAC commitment from the run's personal-data store
(:mod:`torchwitness.ledger.personal`): whoever holds the text and the store's salt can prove a record refers to
it; nobody holding the ledger alone learns anything. No text is written anywhere in the run folder.

With ``retain=True`` a redaction pass (:func:`~torchwitness.controls.redaction.redact`) runs first; the
*redacted* text is what the record commits to and what the personal store keeps (so the run must be opened with
``retain_personal=True``), and the record carries the redaction counts. Per-field retention periods apply in both
modes: :func:`expire` crypto-shreds every commitment whose period has elapsed, through the ledger's own
``erase`` (an ``erasure`` record names them), exactly as ``torchwitness erase`` does for other personal data.

>>> import tempfile, os
>>> os.environ["TORCHWITNESS_KEY_DIR"] = tempfile.mkdtemp()
>>> from torchwitness.ledger import Ledger
>>> with Ledger.open(tempfile.mkdtemp() + "/run") as ledger:
...     fields = ContentPolicy().commit(ledger, prompt="my e-mail is bob@example.org")
>>> sorted(fields), fields["prompt"]["$personal"][:12]
(['prompt'], 'hmac-sha256:')
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchwitness.controls.redaction import redact
from torchwitness.errors import InputError, LedgerError
from torchwitness.ledger.erasure import ledger_of
from torchwitness.ledger.writer import Ledger

_SCHEMA = """
PRAGMA secure_delete = ON;
CREATE TABLE IF NOT EXISTS retention (
    commitment TEXT NOT NULL,
    field TEXT NOT NULL,
    expires_us INTEGER NOT NULL,
    PRIMARY KEY (commitment, field)
);
"""


def _seconds(period: float | dt.timedelta) -> float:
    s = period.total_seconds() if isinstance(period, dt.timedelta) else float(period)
    if s <= 0:
        raise InputError(f"a retention period must be positive, not {period!r}")
    return s


def _retention_db(ledger: Ledger) -> sqlite3.Connection:
    path: Path = ledger.layout.personal.parent / "retention.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    db.executescript(_SCHEMA)
    return db


@dataclass(frozen=True)
class ContentPolicy:
    """How text fields are kept. ``retention`` maps a field name to a period (seconds or ``timedelta``).

    ``retain=False`` (default): commitments only. ``retain=True``: redact, then keep the redacted text as an
    erasable personal value. ``presidio=True`` adds presidio's recognisers to the redaction pass.
    """

    retain: bool = False
    retention: Mapping[str, float | dt.timedelta] = field(default_factory=dict)
    presidio: bool = False

    def __post_init__(self) -> None:
        for period in self.retention.values():
            _seconds(period)

    def commit(self, target: Any, **texts: str | None) -> dict[str, Any]:
        """Record data for each text field: ``{name: {"$personal": commitment}}`` plus, when retaining,
        ``{name + "_redactions": {kind: count}}``. ``None`` fields are left out.

        ``target`` is a ``Run`` or ``Ledger``. Runs in the caller's thread (one SQLite transaction per call).
        """
        ledger = ledger_of(target)
        store = ledger.personal
        if store.retain != self.retain:
            raise InputError(
                "ContentPolicy(retain=True) needs a run opened with retain_personal=True" if self.retain else
                "this run retains personal cleartext (retain_personal=True), so zero-retention content would be "
                "stored unredacted; use ContentPolicy(retain=True), which redacts first")
        out: dict[str, Any] = {}
        kept: dict[str, str] = {}
        for name, text in texts.items():
            if text is None:
                continue
            if not isinstance(text, str):
                raise InputError(f"content field {name!r} must be a str, not {type(text).__name__}")
            if self.retain:
                red = redact(text, presidio=self.presidio)
                text = red.text
                out[f"{name}_redactions"] = dict(sorted(red.counts.items()))
            kept[name] = text
        # One transaction for all fields: each SQLite commit is a disk sync.
        commitments = dict(zip(kept, store.commit_many(list(kept.values())), strict=True))
        now_us = time.time_ns() // 1000
        expiring = [(c, name, now_us + int(_seconds(self.retention[name]) * 1e6))
                    for name, c in commitments.items() if name in self.retention]
        out.update({name: {"$personal": c} for name, c in commitments.items()})
        if expiring:
            db = _retention_db(ledger)
            try:
                # A text seen again keeps its earliest deadline: the period runs from first collection.
                db.executemany("INSERT OR IGNORE INTO retention VALUES (?, ?, ?)", expiring)
            finally:
                db.close()
        return out

    def shown(self, **texts: str | None) -> dict[str, str]:
        """The texts as the run keeps them (redacted) when it retains content; nothing when it keeps commitments."""
        if not self.retain:
            return {}
        return {name: redact(text, presidio=self.presidio).text for name, text in texts.items() if text is not None}

    def erase(self, target: Any, text: str, *, reason: str = "data subject request (GDPR Art. 17)") -> int:
        """Crypto-shred ``text`` (and, when retaining, its redacted form); returns how many values were erased."""
        values = [text, redact(text, presidio=self.presidio).text] if self.retain else [text]
        return ledger_of(target).erase(values=values, reason=reason)


def expire(target: Any, *, now: dt.datetime | None = None) -> int:
    """Erase every content commitment whose retention period has elapsed; returns how many were erased.

    Each field's expired commitments are erased in one ``erasure`` record whose reason names the field.
    """
    ledger = ledger_of(target)
    now_us = int((now or dt.datetime.now(dt.timezone.utc)).timestamp() * 1e6)
    db = _retention_db(ledger)
    try:
        rows = db.execute("SELECT commitment, field FROM retention WHERE expires_us <= ?", (now_us,)).fetchall()
        by_field: dict[str, list[str]] = {}
        for c, name in rows:
            by_field.setdefault(name, []).append(c)
        erased = 0
        for name, commitments in sorted(by_field.items()):
            n = ledger.erase(commitments=commitments, reason=f"retention period of {name!r} elapsed")
            if n is None:  # queued for the process holding the run: its rows stay until it is done
                raise LedgerError(f"the process that holds {ledger.layout.root} open has not yet erased the expired "
                                  f"{name!r} values (queued, {erased} erased so far); run expire again later")
            erased += n
            db.executemany("DELETE FROM retention WHERE commitment = ? AND field = ?",
                           [(c, name) for c in commitments])
        return erased
    finally:
        db.close()
