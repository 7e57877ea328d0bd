"""Serious incidents (EU AI Act Art. 73): deadlines by category, lateness read from the records, the dossier
table, the coverage and the ``incident`` commands."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import torchwitness as tw
from torchwitness.cli import app
from torchwitness.controls.incidents import record_incident, record_report, run_incidents
from torchwitness.errors import InputError
from torchwitness.ledger import iter_records, verify_run
from torchwitness.report.build import build_document
from torchwitness.report.evidence import Evidence
from torchwitness.report.obligations import coverage

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC)


def _run(root: Path) -> Path:
    with tw.Run(root) as run:
        record_incident(run, "INC-1", category="death", aware=NOW - dt.timedelta(days=20),
                        description="patient Jane Roe harmed")  # 10 days: reported on day 8
        record_report(run, "INC-1", authority="market surveillance authority", reported=NOW - dt.timedelta(days=12))
        record_incident(run, "INC-2", category="widespread", aware=NOW - dt.timedelta(days=3))  # 2 days: overdue
        record_incident(run, "INC-3", aware=NOW - dt.timedelta(days=1))  # 15 days: still due
        record_incident(run, "INC-4", category="critical_infrastructure", aware=NOW - dt.timedelta(days=5))
        record_report(run, "INC-4", authority="authority", reported=NOW - dt.timedelta(days=1))  # 2 days late
    return root


def test_deadlines_follow_the_category_and_lateness_is_read_from_the_records(tmp_path: Path) -> None:
    root = _run(tmp_path / "run")
    found = {i.incident: i for i in run_incidents(root)}
    assert {k: (i.deadline - (NOW - dt.timedelta(days=d))).days for k, i, d in
            [(k, found[k], d) for k, d in (("INC-1", 20), ("INC-2", 3), ("INC-3", 1), ("INC-4", 5))]} == {
        "INC-1": 10, "INC-2": 2, "INC-3": 15, "INC-4": 2}
    assert {k: i.overdue(NOW) for k, i in found.items()} == {"INC-1": False, "INC-2": True, "INC-3": False,
                                                             "INC-4": True}
    assert found["INC-1"].reported is not None and len(found["INC-1"].seqs) == 2
    verify_run(root, deep=True)  # both kinds fit their schemas
    blob = b"".join(p.read_bytes() for p in (root / "records").iterdir())
    assert b"Jane Roe" not in blob  # the description is an erasable commitment


def test_bad_input_is_refused(tmp_path: Path) -> None:
    with tw.Run(tmp_path / "run") as run:
        with pytest.raises(InputError, match="category must be one of"):
            record_incident(run, "INC-9", category="minor")  # type: ignore[arg-type]
        with pytest.raises(InputError, match="timezone"):
            record_incident(run, "INC-9", aware=dt.datetime(2026, 1, 1))
        with pytest.raises(InputError, match="reference"):
            record_incident(run, "")
        with pytest.raises(InputError, match="authority"):
            record_report(run, "INC-9", authority="")
    assert not list(iter_records(tmp_path / "run", kinds={"incident", "incident.report"}))


def test_dossier_coverage_and_the_command(tmp_path: Path) -> None:
    root = _run(tmp_path / "run")
    section = next(s for s in build_document(root).sections if s.key == "annex-iv-9")
    table = next(b for b in section.blocks if getattr(b, "title", "").startswith("Serious incidents"))
    assert [(row[0], row[4]) for row in table.rows] == [("INC-1", "on time"), ("INC-2", "overdue"),
                                                        ("INC-3", "due"), ("INC-4", "late")]
    art73 = {c.obligation.id: c for c in coverage(Evidence.load(root))}["EU-AI-Act:Art.73"]
    assert art73.status == "evidence"
    result = CliRunner().invoke(app, ["incident", "list", str(root)])
    assert result.exit_code == 1 and "INC-2" in result.output and "overdue" in result.output
    with tw.Run(tmp_path / "calm") as run:
        record_incident(run, "INC-5", aware=NOW)
    assert CliRunner().invoke(app, ["incident", "list", str(tmp_path / "calm")]).exit_code == 0
    assert {c.obligation.id: c for c in coverage(Evidence.load(tmp_path / "calm"))}[
        "EU-AI-Act:Art.73"].status == "partial"  # recorded, not yet reported
    bad = subprocess.run([sys.executable, "-m", "torchwitness", "incident", "list", str(tmp_path / "nowhere")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no such run folder" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_an_on_call_engineer_records_an_incident_and_its_report_from_the_command_line(tmp_path: Path) -> None:
    with tw.Run(tmp_path / "run"):
        pass

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "torchwitness", "incident", *args, str(tmp_path / "run")],
                              capture_output=True, text=True)

    added = cli("add", "--id", "INC-8", "--category", "death", "--aware", "2026-11-20T09:30+01:00",
                "--description", "a patient named in the ticket")
    assert added.returncode == 0 and "within 10 days" in added.stdout, added.stderr
    for args, message in ((("add", "--id", "INC-9", "--aware", "2026-11-20T09:30"), "UTC offset"),
                          (("add", "--id", "INC-9", "--aware", "yesterday"), "ISO 8601"),
                          (("add", "--id", "INC-9", "--category", "minor"), "category must be one of")):
        refused = cli(*args)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    reported = cli("report", "--id", "INC-8", "--authority", "the market surveillance authority",
                   "--at", "2026-11-27T12:00+00:00")
    assert reported.returncode == 0, reported.stderr
    (status,) = run_incidents(tmp_path / "run")
    assert status.deadline == dt.datetime(2026, 11, 30, 8, 30, tzinfo=UTC) and not status.overdue(NOW)
    assert [r["kind"] for r in iter_records(tmp_path / "run")][-2:] == ["incident", "incident.report"]
