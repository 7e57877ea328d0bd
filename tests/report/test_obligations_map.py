"""The obligations map matches the final 2024/1689 numbering and coverage reflects what a run recorded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from torchwitness.cli import app
from torchwitness.ledger.schema import kinds
from torchwitness.report.evidence import Evidence
from torchwitness.report.obligations import coverage, load_map, obligations_of_kind

REGULATION = Path(__file__).resolve().parents[2].parent / "shared" / "regulation.md"  # beside the repo


def test_map_uses_final_numbering_and_nine_annex_sections() -> None:
    m = load_map()
    articles = {o.article for o in m.obligations if o.framework == "EU-AI-Act"}
    assert "Art. 72" in articles and "Art. 61" not in articles  # post-market monitoring in the final text
    assert [s["section"] for s in m.annex_iv] == list(range(1, 10))
    assert all(1 <= n <= 9 for o in m.obligations for n in o.annex_iv)
    assert len({o.id for o in m.obligations}) == len(m.obligations)
    for name, control in m.controls.items():
        assert control["kind"] and control["field"], name



def test_map_follows_the_shared_regulatory_reference() -> None:
    """Articles and the nine Annex IV points verbatim from ../shared/regulation.md (final 2024/1689 text)."""
    if not REGULATION.exists():
        pytest.skip(f"regulatory reference not found at {REGULATION}")
    text = REGULATION.read_text().replace("**", "")
    m = load_map()
    listed = set(re.findall(r"^\| (\d+)", text, re.M))
    mapped = {re.match(r"Art\. (\d+)", o.article).group(1) for o in m.obligations if o.framework == "EU-AI-Act"}
    assert listed and listed <= mapped
    points = dict(re.findall(r"^(\d)\. (.+)$", text, re.M))
    for sec in m.annex_iv:
        line = points[str(sec["section"])]
        assert line.startswith(sec["title"]), (line, sec["title"])
        assert sec["scope"] in line

def test_every_kind_the_evidence_table_names_is_documented() -> None:
    """Reports read documented kinds only (a JSON Schema in `torchwitness schema`), never a name one script
    happens to write; a misspelt kind ('review.stop' for 'oversight.stop') would leave evidence unread."""
    m = load_map()
    named = {k for o in m.obligations for n in o.needs for k in n.kinds} | {c["kind"] for c in m.controls.values()}
    sections = {k for s in m.annex_iv for k in m.section_kinds(int(s["section"]))}
    assert named <= set(kinds()), named - set(kinds())
    assert sections <= set(kinds()), sections - set(kinds())
    assert all(m.section_kinds(int(s["section"])) for s in m.annex_iv if int(s["section"]) != 8) and \
        m.section_kinds(8) == ("conformity.declaration",)


def test_rich_run_coverage_statuses(rich_run: Path) -> None:
    ev = Evidence.load(rich_run)
    cov = {c.obligation.id: c for c in coverage(ev)}
    art10 = cov["EU-AI-Act:Art.10(2)(f)-(g)"]
    assert art10.status == "evidence"
    fair = {r["seq"] for r in ev.kind("fairness.eval")}
    assert fair <= set(art10.seqs)
    assert cov["EU-AI-Act:Art.73"].status == "none" and not cov["EU-AI-Act:Art.73"].seqs
    art14 = cov["EU-AI-Act:Art.14"]  # a review decision, but no stop switch or rollback was recorded
    assert art14.status == "partial"
    assert [n.met for n in art14.needs] == [True, False]
    assert ev.last("review.decision")["seq"] in art14.seqs
    assert cov["GDPR:Art.17"].status == "none"  # no erasure recorded ('erasure.request' is not 'erasure')
    # Every cited seq is a record of a kind (or rule) the need names.
    for c in cov.values():
        for n in c.needs:
            for s in n.seqs:
                r = ev.seq(s)
                assert r is not None
                assert r["kind"] in n.need.kinds or r["kind"] == "finding" or any(
                    load_map().controls[x]["kind"] == r["kind"] for x in n.need.controls)


def test_plain_run_is_mostly_uncovered(plain_run: Path) -> None:
    statuses = [c.status for c in coverage(Evidence.load(plain_run))]
    assert statuses.count("none") > len(statuses) // 2
    assert "evidence" not in [c.status for c in coverage(Evidence.load(plain_run))
                              if c.obligation.id == "EU-AI-Act:Art.72"]


def test_obligations_of_kind() -> None:
    assert "EU-AI-Act:Art.72" in obligations_of_kind("drift.alert")
    assert "EU-AI-Act:Art.10(2)(f)-(g)" in obligations_of_kind("fairness.eval")
    assert obligations_of_kind("no.such.kind") == []


def test_coverage_cli(rich_run: Path, plain_run: Path) -> None:
    out = CliRunner().invoke(app, ["coverage", str(rich_run), "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["obligation"]: r for r in json.loads(out.output)}
    assert rows["EU-AI-Act:Art.72"]["status"] == "evidence"
    assert rows["EU-AI-Act:Art.72"]["records"]
    out = CliRunner().invoke(app, ["coverage", str(plain_run)])
    assert out.exit_code == 0 and "none" in out.output
    bad = CliRunner().invoke(app, ["coverage", str(plain_run.parent / "missing")])
    assert bad.exit_code != 0
