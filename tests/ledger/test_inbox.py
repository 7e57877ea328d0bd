"""The inbox: operations another process leaves for the holder of a run's ledger, performed by the holder."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from torchwitness.errors import InputError, LedgerError
from torchwitness.ledger import iter_records, verify_run
from torchwitness.ledger.encoding import Personal
from torchwitness.ledger.inbox import Inbox, appending
from torchwitness.ledger.keys import SigningKey
from torchwitness.ledger.layout import Layout, read_manifest
from torchwitness.ledger.writer import Ledger, now_us

SECRET = "Jane Roe, born 1970-01-01"


def _origin(root: Path) -> str:
    return str(read_manifest(root)["origin"])


def _key(root: Path) -> SigningKey:
    return Ledger.signing_key_for(read_manifest(root), Layout(root), None)


def _private_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (root / "private").iterdir() if p.name.startswith("inbox"))


def test_a_held_ledger_performs_what_another_process_queued(tmp_path: Path) -> None:
    root = tmp_path / "run"
    with Ledger.open(root, inbox_seconds=0.05) as holder:
        holder.append("note", {"i": 0})
        with appending(root) as target:  # a second open of the lock file is refused as another process's is
            assert target.queued
            seq = target.record("complaint", {"who": Personal(SECRET), "scores": np.float32(0.5)}, step=3)
            assert seq == 1
        holder.append("note", {"i": 2})
    records = list(iter_records(root))
    assert [r["kind"] for r in records] == ["note", "complaint", "note"]
    assert records[1]["step"] == 3 and records[1]["data"]["scores"] == 0.5
    assert set(records[1]["data"]["who"]) == {"$personal"}
    assert verify_run(root, deep=True).records == 3
    assert Inbox.for_run(root).pending() == 0


def test_a_personal_value_leaves_the_inbox_once_performed(tmp_path: Path) -> None:
    root = tmp_path / "run"
    with Ledger.open(root, inbox_seconds=0.05):
        inbox = Inbox.for_run(root)  # a submitter that stopped waiting: it never reads the outcome
        inbox.put("record", {"kind": "complaint", "data": {"who": Personal(SECRET)}, "step": None}, _key(root),
                  _origin(root))
        assert SECRET.encode() in _private_bytes(root)
        deadline = time.monotonic() + 10
        while (inbox.pending() or SECRET.encode() in _private_bytes(root)) and time.monotonic() < deadline:
            time.sleep(0.02)  # performed, then overwritten and the write-ahead log truncated
        # Both connections still open: neither file nor write-ahead log may hold it any more.
        assert inbox.pending() == 0 and SECRET.encode() not in _private_bytes(root)
        inbox.close()


def test_without_a_holder_it_appends_directly(tmp_path: Path) -> None:
    root = tmp_path / "run"
    Ledger.open(root).close()
    with appending(root) as target:
        assert not target.queued and target.record("note", {"i": 0}) == 0
    assert not (root / "private" / "inbox.sqlite").exists()


def test_a_holder_that_does_not_look_in_time_performs_it_at_close_or_next_open(tmp_path: Path) -> None:
    root = tmp_path / "run"
    holder = Ledger.open(root, inbox_seconds=3600)
    with appending(root, timeout=0.2) as target:
        assert target.record("note", {"at": "close"}) is None  # still queued when the submitter stops waiting
    holder.close()
    assert [r["data"] for r in iter_records(root)] == [{"at": "close"}]
    # Left while nobody held the run (the holder was killed, say): the next opening performs it first.
    inbox = Inbox.for_run(root)
    op = inbox.put("record", {"kind": "note", "data": {"at": "open"}, "step": None}, _key(root), _origin(root))
    with Ledger.open(root):
        pass
    assert inbox.outcome(op) == (True, 1, None)
    assert [r["data"] for r in iter_records(root)][-1] == {"at": "open"}
    assert verify_run(root).records == 2


def test_an_erasure_is_performed_by_the_holder_so_its_commitments_stay_coherent(tmp_path: Path) -> None:
    root = tmp_path / "run"
    with Ledger.open(root, inbox_seconds=0.05) as holder:
        holder.append("consent", {"subject": Personal("alice")})
        holder.flush()
        with appending(root) as target:
            assert target.erase(values=["alice"], reason="asked") == 1
        # The holder caches commitments: had another process deleted the salt, the holder would go on writing
        # the erased commitment for alice, whose salt is gone.
        holder.append("consent", {"subject": Personal("alice")})
    first, erasure, second = list(iter_records(root))
    assert erasure["kind"] == "erasure" and erasure["data"]["commitments"] == [first["data"]["subject"]["$personal"]]
    assert second["data"]["subject"] != first["data"]["subject"]
    result = verify_run(root, deep=True)
    assert result.records == 3 and result.erased_payloads == 1


def test_a_failing_operation_is_reported_to_its_submitter_and_blocks_nothing(tmp_path: Path) -> None:
    root = tmp_path / "run"
    with Ledger.open(root, inbox_seconds=0.05) as holder, appending(root) as target:
        with pytest.raises(LedgerError, match="could not record it: record kind 'Not A Kind'"):
            target.record("Not A Kind", {})
        with pytest.raises(InputError, match="a set cannot wait in a run's inbox"):
            target.record("note", {"ids": {1, 2}})  # refused in the submitter: nothing is queued
        assert target.record("note", {"ok": True}) == 0
        holder.append("note", {"after": True})
    assert [r["data"] for r in iter_records(root)] == [{"ok": True}, {"after": True}]


def test_only_operations_signed_with_the_run_key_are_performed(tmp_path: Path) -> None:
    """Write access to the private folder is not the signing key: a forged operation is refused, not signed."""
    root = tmp_path / "run"
    Ledger.open(root).close()
    inbox = Inbox.for_run(root)
    body = {"kind": "note", "data": {"forged": True}, "step": None}
    forged = inbox.put("record", body, SigningKey.generate(), _origin(root))
    raw = inbox._db.execute("INSERT INTO ops (nonce, op, body, created_us) VALUES ('n', 'record', ?, ?)",
                            ('{"kind": "note", "data": {"unsigned": true}, "step": null}', now_us())).lastrowid
    signed = inbox.put("record", {"kind": "note", "data": {"signed": True}, "step": None}, _key(root), _origin(root))
    with Ledger.open(root):
        pass
    refused = (True, None, "not signed with this run's key for this run: refused")
    assert inbox.outcome(forged) == refused and inbox.outcome(raw) == refused
    assert inbox.outcome(signed) == (True, 0, None)
    assert [r["data"] for r in iter_records(root)] == [{"signed": True}]


def test_a_signed_operation_is_performed_once_and_only_in_its_run(tmp_path: Path) -> None:
    """Put back after it was performed, it is not performed again; copied to another run signed with the same
    key, it is refused there."""
    root, other = tmp_path / "run", tmp_path / "other"
    Ledger.open(other).close()
    columns = "nonce, op, body, signature, created_us"
    with Ledger.open(root, inbox_seconds=0.05) as holder:
        with appending(root) as target:
            assert target.record("incident", {"incident": "INC-1"}) == 0
        inbox = Inbox.for_run(root)
        (row,) = inbox._db.execute(f"SELECT {columns}, body IS NULL FROM ops").fetchall()
        assert row[-1]  # the body is gone once performed, so only a copy taken while it waited can be replayed
        signed = inbox._db.execute(f"SELECT {columns} FROM ops").fetchone()
        inbox._db.execute("DELETE FROM ops")
        captured = (signed[0], signed[1], '{"kind": "incident", "data": {"incident": "INC-1"}, "step": null}',
                    signed[3], signed[4])
        inbox._db.execute(f"INSERT INTO ops ({columns}) VALUES (?, ?, ?, ?, ?)", captured)
        deadline = time.monotonic() + 10
        while inbox.pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        holder.append("note", {"after": True})
    assert [r["kind"] for r in iter_records(root)] == ["incident", "note"]
    elsewhere = Inbox.for_run(other)
    moved = int(elsewhere._db.execute(f"INSERT INTO ops ({columns}) VALUES (?, ?, ?, ?, ?)", captured).lastrowid)
    with Ledger.open(other):
        pass
    assert elsewhere.outcome(moved) == (True, None, "not signed with this run's key for this run: refused")


def test_an_operation_queued_as_its_holder_lets_go_is_performed_by_the_submitter(tmp_path: Path) -> None:
    root = tmp_path / "run"
    holder = Ledger.open(root, inbox_seconds=3600)
    with appending(root, timeout=0.2) as target:
        assert target.queued
        holder.close()  # its last look came before this operation was queued
        assert target.record("note", {"late": True}) == 0  # the submitter opened the run: that performed it
    assert [r["data"] for r in iter_records(root)] == [{"late": True}]


def test_a_damaged_inbox_warns_and_the_run_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "run"
    Ledger.open(root).close()
    (root / "private").mkdir()
    (root / "private" / "inbox.sqlite").write_bytes(b"not a database" * 100)
    with pytest.warns(RuntimeWarning, match="cannot perform the operations in"), \
            Ledger.open(root, inbox_seconds=0.05) as ledger:
        ledger.append("note", {"i": 0})
    assert verify_run(root).records == 1
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(root / "private" / "inbox.sqlite").execute("SELECT * FROM ops")
