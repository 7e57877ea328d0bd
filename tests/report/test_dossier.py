"""The dossier: one document model, three renderings, every number traceable to the record it cites."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from torchwitness.cli import app
from torchwitness.ledger import verify_run
from torchwitness.report.build import build_document
from torchwitness.report.evidence import Evidence, get, number
from torchwitness.report.model import fmt
from torchwitness.report.obligations import load_map
from torchwitness.report.render import render_md, write_report

HEADINGS = [f"Annex IV.{s['section']} {s['title']}" for s in load_map().annex_iv]


@pytest.fixture(scope="module")
def doc(rich_run: Path):
    return build_document(rich_run)


def test_sections_and_verification(doc) -> None:
    assert [s.title for s in doc.sections[:9]] == HEADINGS
    assert doc.verification["ok"] and len(doc.verification["proofs"]) == 24
    by_key = {s.key: s for s in doc.sections}
    for key in ("annex-iv-1", "annex-iv-2", "annex-iv-3", "annex-iv-5", "annex-iv-6", "annex-iv-9"):
        assert by_key[key].has_evidence, key
    assert not by_key["annex-iv-8"].has_evidence  # no declaration of conformity is ever recorded here
    signed = [s for s in by_key["annex-iv-2"].blocks if "test records are included" in getattr(s, "text", "")]
    assert len(signed) == 1 and doc.verification["signer"] in signed[0].text
    assert signed[0].text.startswith("7 of these 7")  # eval, 4 fairness.eval, 2 edit.certificate
    titles = [c.title for c in doc.charts()]
    for expected in ("Training loss", "Gradient norm", "Privacy loss", "Fairness disparities", "Certificate",
                     "Drift statistics"):
        assert any(t.startswith(expected) for t in titles), expected
    fairness = next(c for c in doc.charts() if c.title.startswith("Fairness"))
    s = fairness.series[0]
    assert len(s.points) == 4 and all(lo <= y <= hi for (_, y), lo, hi in zip(s.points, s.lows, s.highs,
                                                                              strict=True))


def test_the_report_runs_hold_the_shapes_the_capabilities_write(rich_run: Path, worse_run: Path) -> None:
    """Reports tested on made-up record shapes pass while showing dashes for real runs: every record of a
    registered kind in these runs must fit its schema (a deep verification checks exactly that)."""
    for run in (rich_run, worse_run):
        verify_run(run, deep=True)


def test_post_market_section_reads_the_deployment_records(doc) -> None:
    """Drift alerts and review decisions as the deployment code writes them (names, values, actions)."""
    section = next(s for s in doc.sections if s.key == "annex-iv-9")
    table = next(b for b in section.blocks if getattr(b, "title", "") == "Drift alerts")
    assert table.columns == ["seq", "recorded", "window", "feature", "statistic", "value", "p-value", "threshold"]
    assert table.rows and {row[4] for row in table.rows} <= {"ks", "psi"} and "ks" in {row[4] for row in table.rows}
    for row in table.rows:
        assert row[2] in ("3", "4", "5") and row[3] == "age" and "—" not in (row[5], row[7])
        assert (row[6] == "—") == (row[4] == "psi")  # PSI has no p-value
    texts = [getattr(b, "text", "") for b in section.blocks]
    assert "1 human review decisions (1 override)." in texts
    assert any("keeps the raw inputs it serves for 2,592,000 s (30 days), then deletes them" in t for t in texts)
    assert "20 retained inputs were deleted at the end of their retention period." in texts


def test_twenty_random_cited_statements_are_supported(doc, rich_run: Path) -> None:
    ev = Evidence.load(rich_run)
    numeric = [s for s in doc.statements() if s.cites and s.value is not None]
    assert len(numeric) >= 20
    for s in random.Random(7).sample(numeric, 20):
        records = [ev.seq(q) for q in s.cites]
        assert all(r is not None for r in records), s.text
        assert fmt(s.value) in s.text, s.text
        if s.basis == "field":
            assert number(get(records[0], s.field)) == pytest.approx(s.value), s.text
        else:
            assert s.basis == "count" and s.value == len(s.cites), s.text


def test_markdown_says_no_evidence_where_nothing_was_recorded(plain_run: Path) -> None:
    md = render_md(build_document(plain_run))
    for h in HEADINGS:
        assert f"## {h}" in md
    parts = re.split(r"^## ", md, flags=re.M)
    empty = [p.splitlines()[0] for p in parts if "No evidence in this run's ledger" in p]
    assert any(p.startswith("Annex IV.5") for p in empty) and any(p.startswith("Annex IV.9") for p in empty)
    assert "drift.alert" in md  # it names what would have documented post-market monitoring


@pytest.mark.skipif(not shutil.which("pdftoppm") or not shutil.which("pdftotext"), reason="poppler-utils missing")
def test_pdf_renders_every_page_and_has_every_heading(doc, tmp_path: Path) -> None:
    pdf = write_report(doc, tmp_path / "dossier.pdf", "pdf")
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    subprocess.run(["pdftoppm", "-r", "30", "-png", str(pdf), str(tmp_path / "page")], check=True)
    images = sorted(tmp_path.glob("page*.png"))
    assert pages >= 3 and len(images) == pages and all(p.stat().st_size > 1000 for p in images)
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    flat = " ".join(text.split())
    for h in HEADINGS:
        assert h in flat, h
    section8 = flat[flat.index(HEADINGS[7]):flat.index(HEADINGS[8])]
    assert "No evidence in this run's ledger." in section8


def test_report_cli_formats(rich_run: Path, tmp_path: Path) -> None:
    for fmt_ in ("md", "html"):
        out = tmp_path / f"d.{fmt_}"
        r = CliRunner().invoke(app, ["report", str(rich_run), "--format", fmt_, "-o", str(out), "--proofs", "4"])
        assert r.exit_code == 0, r.output
        assert "Annex IV.9" in out.read_text()
    r = CliRunner().invoke(app, ["report", str(rich_run), "--format", "docx"])
    assert r.exit_code != 0


def test_malformed_records_read_as_missing_evidence(tmp_path: Path) -> None:
    """Record shapes evolve on other branches: a reader must degrade to "no evidence", never crash."""
    import torchwitness as tw
    from torchwitness.report.card import build_card
    from torchwitness.report.diff import snapshot
    from torchwitness.report.render import render_html

    with tw.Run(tmp_path / "odd", config=["not", "a", "dict"]) as run:
        run.record("fairness.eval", {"views": "oops", "gate": [1, 2]})
        run.record("fairness.eval", {"views": [{"attributes": "sex", "groups": [1, None],
                                                "disparities": [{"metric": "dpd", "estimate": "high"}, 3]}]})
        run.record("data.datasheet", [1, 2, 3])
        run.record("privacy.epsilon", {"epsilon": "lots", "delta": None})
        run.record("finding", {"rule_id": 5, "severity": None})
        run.record("edit.certificate", {"certificate": "sha256:" + "0" * 64, "metrics": "n/a", "verdict": None})
        run.record("drift.alert", {"statistic": {"$array": "x"}, "value": 0.0})
        run.record("review.decision", "approved")
        run.record("incident", {"incident": "INC-1", "deadline_us": "soon"})
        run.record("incident", {"incident": "INC-2", "category": "serious", "deadline_us": 10**15})
        run.record("incident.report", {"incident": "INC-2"})
        run.record("retention.policy", {"logs_days": 10**9, "role": "provider"})
        run.record("eval", {"metrics": {"accuracy": float("nan")}})
    doc = build_document(tmp_path / "odd")
    assert "Annex IV.9" in render_html(doc) and "Annex IV.3" in render_md(doc)
    drift = next(c for c in doc.charts() if c.title.startswith("Drift"))
    assert drift.series[0].points == [(0.0, 0.0)]  # a zero statistic is a value, not a missing one
    assert not any(s.text.startswith("accuracy") for s in doc.statements())  # NaN is not a number
    build_card(tmp_path / "odd")
    assert "metric:accuracy" not in snapshot(tmp_path / "odd")


def test_long_trajectories_are_thinned_evenly(tmp_path: Path) -> None:
    import torchwitness as tw
    from torchwitness.report.sections import MAX_POINTS

    with tw.Run(tmp_path / "long") as run:
        for step in range(1000):
            run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    loss = next(c for c in build_document(tmp_path / "long", proofs=2).charts()
                if c.title.startswith("Training loss"))
    s = loss.series[0]
    assert len(s.points) == MAX_POINTS and s.points[0][0] == 0 and s.points[-1][0] == 999
    ev = Evidence.load(tmp_path / "long")
    assert all(number(get(ev.seq(q), "metrics.loss")) == y for (_, y), q in zip(s.points, s.seqs, strict=True))
