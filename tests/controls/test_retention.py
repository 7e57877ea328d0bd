"""Log retention declarations (EU AI Act Art. 19(1), 26(6)): refused when short without a legal basis, counted
by role in the obligations coverage, stated with a keep-until date in the dossier."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import torchwitness as tw
from torchwitness.controls.retention import SIX_MONTHS_DAYS, declare_retention
from torchwitness.errors import InputError
from torchwitness.ledger import iter_records, verify_run
from torchwitness.report.build import build_document
from torchwitness.report.evidence import Evidence
from torchwitness.report.obligations import coverage


def _status(root: Path) -> dict[str, str]:
    return {c.obligation.id: c.status for c in coverage(Evidence.load(root))}


def test_six_months_is_the_floor_unless_a_law_says_otherwise(tmp_path: Path) -> None:
    with tw.Run(tmp_path / "run") as run:
        with pytest.raises(InputError, match="at least six months"):
            declare_retention(run, logs_days=90)
        for bad in (0, 200.5, "184"):
            with pytest.raises(InputError, match="whole number of days"):
                declare_retention(run, logs_days=bad)
        with pytest.raises(InputError, match="role must be"):
            declare_retention(run, role="operator")
        declare_retention(run, logs_days=90, role="deployer", basis="a national law that caps log storage")
        declare_retention(run)
    records = [r["data"] for r in iter_records(tmp_path / "run", kinds={"retention.policy"})]
    assert [(r["logs_days"], r["six_months"], r["role"], r["basis"]) for r in records] == [
        (90, False, "deployer", "a national law that caps log storage"), (SIX_MONTHS_DAYS, True, "provider", None)]
    verify_run(tmp_path / "run", deep=True)  # the records fit their registered schema


def test_coverage_counts_each_declaration_for_its_own_role(tmp_path: Path) -> None:
    with tw.Run(tmp_path / "none"):
        pass
    with tw.Run(tmp_path / "deployer") as run:
        declare_retention(run, logs_days=365, role="deployer")
    with tw.Run(tmp_path / "provider") as run:
        declare_retention(run, logs_days=365, role="provider")
    assert _status(tmp_path / "none")["EU-AI-Act:Art.19"] == "none"
    assert _status(tmp_path / "deployer")["EU-AI-Act:Art.19"] == "none"  # Art. 19 binds providers
    assert _status(tmp_path / "provider")["EU-AI-Act:Art.19"] == "evidence"
    deployer = {c.obligation.id: c for c in coverage(Evidence.load(tmp_path / "deployer"))}["EU-AI-Act:Art.26(5)-(6)"]
    assert [n.met for n in deployer.needs] == [False, False, True]  # no serving or drift yet, but the retention


def test_the_dossier_states_until_when_the_oldest_record_is_kept(tmp_path: Path) -> None:
    with tw.Run(tmp_path / "run") as run:
        seq = declare_retention(run, logs_days=365, role="deployer", storage="s3://audit-logs (object lock)")
    oldest = Evidence.load(tmp_path / "run").seq(0)
    until = (dt.datetime.fromtimestamp(oldest["ts"] / 1e6, dt.timezone.utc) + dt.timedelta(days=365)).date()
    statements = [s for s in build_document(tmp_path / "run").statements() if s.cites == [seq]]
    assert len(statements) == 1 and statements[0].value == 365
    assert statements[0].text.endswith(f"until at least {until.isoformat()}.")
    assert "Art. 26(6), in s3://audit-logs (object lock)" in statements[0].text


def test_the_retention_command(tmp_path: Path) -> None:
    import subprocess
    import sys

    with tw.Run(tmp_path / "run") as run:
        run_id = run.run_id

    def cli(*args: str, run: Path = tmp_path / "run") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "torchwitness", "retention", str(run), *args],
                              capture_output=True, text=True)

    short = cli("--days", "30")
    assert short.returncode == 2 and "at least six months" in short.stderr and len(short.stderr.splitlines()) == 1
    done = cli("--days", "400", "--role", "deployer", "--storage", "object storage with a 400-day lock")
    assert done.returncode == 0 and "400 days" in done.stdout, done.stderr
    assert f"appended records to the existing run {run_id} in {tmp_path / 'run'}" in " ".join(done.stderr.split())
    missing = cli("--days", "400", run=tmp_path / "typo")  # appending verbs never create a run
    assert missing.returncode == 2 and "no such run folder" in missing.stderr and not (tmp_path / "typo").exists()
    (record,) = [r["data"] for r in iter_records(tmp_path / "run", kinds={"retention.policy"})]
    assert record == {"logs_days": 400, "six_months": True, "role": "deployer",
                      "storage": "object storage with a 400-day lock", "basis": None}
