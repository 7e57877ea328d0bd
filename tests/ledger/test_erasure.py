"""The erasure journal's recovery paths, each set up exactly as a kill at that moment leaves the run folder (the
kills themselves are in test_erasure_crash.py)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from torchwitness.cli import app
from torchwitness.ledger import iter_records, verify_run
from torchwitness.ledger.encoding import Personal
from torchwitness.ledger.writer import Ledger


def _begun(root: Path, *, recorded: bool) -> str:
    """A run where an erasure of "bob" was begun (its intent committed) and the process died, before its record
    was written or (``recorded``) after it was written but before the salt was deleted; returns bob's
    commitment."""
    with Ledger.open(root) as ledger:
        ledger.append("note", {"who": Personal("bob")})
        ledger.append("note", {"who": Personal("carol")})
        ledger.flush()
        store = ledger.personal
        commitment = store.lookup("bob")
        record = ("erasure", {"commitments": [commitment], "count": 1, "reason": "asked"})
        store.journal.begin(ledger.next_seq, [record], [commitment], [store.tag("bob")])
        if recorded:
            ledger.append(*record)
    return commitment


def _erasures(root: Path) -> list[dict]:
    return [r["data"] for r in iter_records(root, kinds={"erasure"})]


def test_an_interrupted_erasure_is_recorded_and_finished_by_the_next_opener(tmp_path: Path) -> None:
    root = tmp_path / "a #run? with odd characters"  # the journal is looked up through a file: URI
    commitment = _begun(root, recorded=False)
    assert _erasures(root) == []
    assert any("erasure was interrupted" in note for note in verify_run(root).notes)
    with Ledger.open(root) as ledger:
        (done,) = ledger.completed_erasures
        assert (done.store, done.keys, done.appended) == ("personal", [commitment], 1)
        assert ledger.personal.lookup("bob") is None and ledger.personal.lookup("carol") is not None
    assert _erasures(root) == [{"commitments": [commitment], "count": 1, "reason": "asked"}]
    assert verify_run(root).erased_payloads == 1
    with Ledger.open(root) as ledger:  # finished once: nothing left to do
        assert ledger.completed_erasures == []


def test_an_erasure_already_on_record_is_not_recorded_twice(tmp_path: Path) -> None:
    root = tmp_path / "run"
    commitment = _begun(root, recorded=True)
    with Ledger.open(root) as ledger:
        (done,) = ledger.completed_erasures
        assert done.appended == 0 and done.seq is None
        assert ledger.personal.lookup("bob") is None
    assert len(_erasures(root)) == 1 and _erasures(root)[0]["commitments"] == [commitment]


def test_rerunning_the_erase_command_says_it_completed_the_interrupted_one(tmp_path: Path) -> None:
    root = tmp_path / "run"
    _begun(root, recorded=False)
    result = CliRunner().invoke(app, ["erase", str(root), "--subject", "bob"])
    assert result.exit_code == 0, result.output
    assert "completed an interrupted erasure of 1 personal value(s) (recorded now, seq 2)" in result.output
    assert len(_erasures(root)) == 1
    again = CliRunner().invoke(app, ["erase", str(root), "--subject", "bob"])
    assert again.exit_code == 1 and "nothing to erase" in again.output
