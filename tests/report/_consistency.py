"""Check a dossier, its coverage and its model card against the ledger they are built from.

Every statement is checked against the records it cites: each cited record exists and is of a kind the evidence
table assigns to the statement's section; a stated number is the cited field's value or the count of cited
records; a section says "No evidence" exactly when no record of its kinds exists; a statement that something is
absent is true; each coverage need is met exactly when a record that counts for it exists, and cites only such
records; the sessions table lists every session.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from torchwitness.report.build import build_document
from torchwitness.report.evidence import Evidence, get, number
from torchwitness.report.model import Chart, Statement, Table, fmt
from torchwitness.report.obligations import coverage, load_map
from torchwitness.report.render import render_md

# Statements that say something is absent, and the kinds whose records would make them false.
ABSENCE = {"No harmonised standard": ("standards.applied",), "raised no finding": ("finding",)}


def _cites(block: Any) -> list[int]:
    return block.cites if isinstance(block, Statement | Chart) else [q for row in block.row_cites for q in row]


def check_dossier(run_dir: Path) -> dict[str, Any]:
    """Run every check on ``run_dir``'s dossier; returns what was checked (for tests to assert on)."""
    ev = Evidence.load(run_dir)
    omap = load_map()
    doc = build_document(run_dir, proofs=2)
    assert doc.verification["ok"], doc.verification
    checked = {"statements": 0, "sections_with_evidence": 0}
    for n, sec in enumerate(doc.sections[:9], start=1):
        kinds = set(omap.section_kinds(n))
        present = [r for r in ev.records if r["kind"] in kinds]
        assert sec.has_evidence == bool(present), (sec.title, sec.missing)
        assert sec.missing == ([] if present else sorted(kinds)), sec.title
        checked["sections_with_evidence"] += bool(present)
        for block in sec.blocks:
            for q in _cites(block):
                record = ev.seq(q)
                assert record is not None and record["kind"] in kinds, (sec.title, q, record and record["kind"])
            if isinstance(block, Statement):
                _check_statement(ev, block)
                checked["statements"] += 1
            if isinstance(block, Chart):
                for s in block.series:
                    assert len(s.points) == len(s.seqs)
        cited = set(sec.cited())
        for kind in kinds:  # every record kind of the section that is present is stated
            assert not ev.kind(kind) or cited & {r["seq"] for r in ev.kind(kind)}, (sec.title, kind)
    for c in coverage(ev, omap):
        for need in c.needs:
            counted = set(need.need.kinds) | {omap.controls[x]["kind"] for x in need.need.controls} | (
                {"finding"} if need.need.rules else set())
            assert all(ev.seq(q)["kind"] in counted for q in need.seqs), (c.obligation.id, need.need.label)
            if need.need.kinds:
                assert need.met == bool(need.seqs)
                assert bool(ev.kind(*need.need.kinds)) <= need.met, (c.obligation.id, need.need.label)
    _check_markdown(render_md(doc), doc, ev)
    sessions = next(b for b in doc.sections[0].blocks if isinstance(b, Table) and b.title == "Sessions of this run")
    assert len(sessions.rows) == len(ev.kind("run.start"))
    return checked


def _check_statement(ev: Evidence, s: Statement) -> None:
    if s.value is not None:
        assert fmt(s.value) in s.text, s.text
        if s.basis == "field":
            assert number(get(ev.seq(s.cites[0]), s.field)) == pytest.approx(s.value), s.text
        else:
            assert s.basis == "count" and s.value == len(s.cites), s.text
    for phrase, kinds in ABSENCE.items():
        if phrase in s.text:
            assert not ev.kind(*kinds), s.text


def _check_markdown(md: str, doc: Any, ev: Evidence) -> None:
    """The rendered text says "No evidence" in exactly the sections without evidence, and names their kinds."""
    parts = {p.splitlines()[0]: p for p in re.split(r"^## ", md, flags=re.M)[1:]}
    for sec in doc.sections[:9]:
        text = parts[sec.title]
        assert ("No evidence in this run's ledger" in text) == (not sec.has_evidence), sec.title
        if not sec.has_evidence:
            assert all(k in text for k in sec.missing)


def check_card(run_dir: Path) -> str:
    """The model card's sections say "No evidence" only when the dossier's matching section has none."""
    from torchwitness.report.card import build_card, validate_card

    text = build_card(run_dir)
    validate_card(text)
    doc = build_document(run_dir, proofs=0)
    parts = {p.splitlines()[0]: p for p in re.split(r"^## ", text, flags=re.M)[1:]}
    for heading, n in (("Bias, Risks, and Limitations", 5), ("Training Details", 2), ("Evaluation", 3)):
        assert ("No evidence in this run's ledger" in parts[heading]) == (not doc.sections[n - 1].has_evidence)
    return text
