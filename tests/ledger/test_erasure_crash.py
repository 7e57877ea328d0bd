"""SIGKILL during an erasure never loses its evidence: at every moment either nothing was deleted or the erasure
is on record, and doing it again (or just opening the run) finishes a half-done one, recording it once.

The work runs in forked children through the real CLI (tests/ledger/_erase_kills.py); kills land at random
moments drawn over the measured duration of the work, plus deterministic kills at the two boundaries that
matter (records signed but nothing deleted; intent written but records not yet signed).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from torchwitness.cli import app
from torchwitness.ledger import iter_records, verify_run
from torchwitness.ledger.encoding import Personal
from torchwitness.ledger.personal import PersonalStore
from torchwitness.ledger.writer import Ledger
from torchwitness.probes.retained import RetainedInputs

pytestmark = pytest.mark.slow
DRIVER = Path(__file__).with_name("_erase_kills.py")
SUBJECTS = ["user-1", "user-2"]


def _template(root: Path, *, expiring: int = 0) -> list[str]:
    """A closed run with personal values (and ``expiring`` retained inputs past their period); returns the
    commitments of SUBJECTS."""
    with Ledger.open(root) as ledger:
        for i in range(30):
            ledger.append("note", {"who": Personal(f"user-{i}"), "i": i})
    if expiring:
        store = RetainedInputs.for_run(root)
        rows = np.arange(expiring * 3, dtype=np.float32).reshape(expiring, 3)
        store.put_many([f"r-1-{i}" for i in range(expiring)], rows, expires_us=1)  # long expired
        store.put_many(["r-1-kept"], rows[:1], expires_us=2**62)
        store.close()
    store = PersonalStore(root / "private" / "personal.sqlite")
    try:
        return [store.lookup(s) for s in SUBJECTS]
    finally:
        store.close()


def _kill(mode: str, template: Path, out: Path, trials: int, seed: int, args: list[str],
          at: str | None = None) -> list[dict]:
    out.mkdir()
    cmd = [sys.executable, str(DRIVER), mode, str(template), str(out), str(trials), str(seed),
           *(["--at", at] if at else []), "--", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _live(root: Path, table: str, column: str, keys: list[str]) -> set[str]:
    db = sqlite3.connect(root / "private" / f"{'personal' if table == 'personal' else 'inputs'}.sqlite")
    try:  # a normal connection: it rolls back a transaction the kill cut short, as the next process would
        return {k for k in keys if db.execute(f"SELECT 1 FROM {table} WHERE {column} = ?", (k,)).fetchone()}
    finally:
        db.close()


def _pending(root: Path, store: str) -> bool:
    db = sqlite3.connect(root / "private" / store)
    try:
        return db.execute("SELECT count(*) FROM erasure_intents").fetchone()[0] > 0
    except sqlite3.OperationalError:  # killed before the journal table was made
        return False
    finally:
        db.close()


def _erasures(root: Path, commitments: list[str]) -> list[dict]:
    return [r for r in iter_records(root, kinds={"erasure"}) if set(commitments) & set(r["data"]["commitments"])]


def _check_personal_trial(root: Path, commitments: list[str], retry: list[str] | None) -> tuple[bool, bool]:
    """The invariant right after the kill, then after the retry (``retry``: CLI args, or None to just reopen
    the run as a restarted holder would); returns (whether the kill left it half done, whether it had shredded)."""
    live = _live(root, "personal", "commitment", commitments)
    recorded = _erasures(root, commitments)
    assert live in (set(), set(commitments)), "one transaction deletes both salts, or neither"
    assert live or recorded, f"{root}: salts shredded with no erasure record"
    pending = _pending(root, "personal.sqlite")
    if retry is None:
        Ledger.open(root).close()
    else:
        result = CliRunner().invoke(app, [a.replace("{run}", str(root)) for a in retry])
        if not live and not pending:  # the kill came after the erasure had finished: nothing is left to do
            assert result.exit_code == 1 and "nothing to erase" in result.output, result.output
        else:
            assert result.exit_code == 0, (root, result.output)
        if pending:
            assert "completed an interrupted erasure of 2 personal value(s)" in result.output, result.output
    assert not _live(root, "personal", "commitment", commitments)
    (record,) = _erasures(root, commitments)  # recorded exactly once, whatever the kill interrupted
    assert sorted(record["data"]["commitments"]) == sorted(commitments)
    assert not _pending(root, "personal.sqlite")
    assert verify_run(root).erased_payloads == 2
    return pending, not live


def test_sigkill_at_random_moments_of_erase_never_loses_the_erasure(tmp_path: Path) -> None:
    template = tmp_path / "template"
    commitments = _template(template)
    args = ["erase", "{run}", "--subject", SUBJECTS[0], "--subject", SUBJECTS[1]]
    trials = _kill("cli", template, tmp_path / "random", 40, seed=7, args=args)
    outcomes = [_check_personal_trial(Path(t["dir"]), commitments, args) for t in trials]
    killed = sum(t["killed"] for t in trials)
    assert killed >= 10, f"only {killed} of 40 children were killed before finishing"  # timing: load-dependent
    # Some kills came before anything was deleted. How many land mid-erasure (an intent to finish) depends on the
    # machine's load (about 1 in 10 here): the boundary test below kills there every time.
    assert any(not shredded for _, shredded in outcomes), outcomes


def test_sigkill_at_each_boundary_of_an_erasure(tmp_path: Path) -> None:
    """Killed as the deletion begins (records signed, nothing deleted) and as the signing begins (intent written,
    records perhaps written, not signed): the retry finishes the erasure and records it once."""
    template = tmp_path / "template"
    commitments = _template(template)
    args = ["erase", "{run}", "--subject", SUBJECTS[0], "--subject", SUBJECTS[1]]
    for at in ("Journal.finish", "Ledger.checkpoint"):
        (trial,) = _kill("cli", template, tmp_path / at, 1, seed=0, args=args, at=at)
        assert trial["killed"]
        root = Path(trial["dir"])
        if at == "Journal.finish":
            assert len(_erasures(root, commitments)) == 1
        assert _check_personal_trial(root, commitments, args) == (True, False)  # begun, nothing deleted yet


def test_sigkill_of_a_holder_performing_a_queued_erasure(tmp_path: Path) -> None:
    template = tmp_path / "template"
    commitments = _template(template)
    trials = _kill("inbox", template, tmp_path / "inbox", 10, seed=3, args=SUBJECTS)
    for t in trials:  # the holder restarts: opening the run finishes the erasure or performs the queued one
        _check_personal_trial(Path(t["dir"]), commitments, None)


def test_sigkill_during_expiry_of_retained_inputs(tmp_path: Path) -> None:
    template = tmp_path / "template"
    _template(template, expiring=40)
    expired = [f"r-1-{i}" for i in range(40)]
    trials = _kill("cli", template, tmp_path / "expire", 10, seed=5, args=["expire", "{run}"])
    for t in trials:
        root = Path(t["dir"])
        live = _live(root, "inputs", "decision_id", expired)
        expiries = list(iter_records(root, kinds={"inputs.expiry"}))
        assert live in (set(), set(expired)) and (live or expiries), f"{root}: inputs deleted with no record"
        result = CliRunner().invoke(app, ["expire", str(root)])
        assert result.exit_code == 0, result.output
        assert not _live(root, "inputs", "decision_id", expired)
        assert _live(root, "inputs", "decision_id", ["r-1-kept"]) == {"r-1-kept"}
        (expiry,) = iter_records(root, kinds={"inputs.expiry"})
        assert expiry["data"]["count"] == 40
        verify_run(root)


def test_provenance_erase_killed_midway_is_finished_by_its_retry(tmp_path: Path) -> None:
    """``provenance --erase`` records the revocations, the affected checkpoints and the erasure as one intent:
    killed after signing them (or as the signing begins), the retry finishes it and reports it, once."""
    from torchwitness.controls.consent import ConsentRegistry
    from torchwitness.controls.provenance import ProvenanceRecorder
    from torchwitness.run import Run

    template = tmp_path / "template"
    subjects = [f"subject-{i}" for i in range(40)]
    with Run(template) as run:
        ConsentRegistry(run).grant_many(subjects, "training", version="v1", start=0.0)
        prov = ProvenanceRecorder(run, subjects)
        for step in range(4):
            prov.record_batch(step, np.arange(step * 10, step * 10 + 10))
        prov.end_epoch(0)
        prov.checkpoint_saved(3, epoch=0, name="epoch-0.pt")
    args = ["provenance", "{run}", "--subject", "subject-5", "--erase"]
    for at in ("Journal.finish", "Ledger.checkpoint"):
        (trial,) = _kill("cli", template, tmp_path / at, 1, seed=0, args=args, at=at)
        root = Path(trial["dir"])
        store = PersonalStore(root / "private" / "personal.sqlite")
        assert trial["killed"] and store.lookup("subject-5") is not None  # nothing deleted yet
        store.close()
        if at == "Journal.finish":  # all three kinds signed before the salt goes
            assert {r["kind"] for r in iter_records(root)} >= {"consent.revoke", "provenance.erasure", "erasure"}
        result = CliRunner().invoke(app, [a.replace("{run}", str(root)) for a in args])
        assert result.exit_code == 0, result.output
        assert "checkpoints carrying its influence: epoch-0.pt" in result.output
        kinds = [r["kind"] for r in iter_records(root)]
        assert kinds.count("provenance.erasure") == kinds.count("erasure") == kinds.count("consent.revoke") == 1
        assert verify_run(root).erased_payloads >= 1
        again = CliRunner().invoke(app, [a.replace("{run}", str(root)) for a in args])
        assert again.exit_code == 2 and "already erased" in again.output
