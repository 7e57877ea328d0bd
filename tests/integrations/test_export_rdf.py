"""The RDF graph uses only the published vocabulary, and the example SPARQL queries answer from the records."""

from __future__ import annotations

from pathlib import Path

from rdflib import Literal, URIRef
from rdflib.namespace import RDF

from torchwitness.integrations.rdf_export import NS, QUERIES, run_graph, vocabulary
from torchwitness.report.evidence import Evidence, get
from torchwitness.report.obligations import coverage


def test_graph_terms_are_all_in_the_vocabulary(evidence_run: Path) -> None:
    g, vocab = run_graph(evidence_run), vocabulary()
    defined = {str(s) for s in vocab.subjects() if str(s).startswith(NS)}
    used = {str(p) for p in g.predicates() if str(p).startswith(NS)}
    used |= {str(o) for o in g.objects(None, RDF.type) if str(o).startswith(NS)}
    assert used and used <= defined, used - defined


def test_art10_obligations_lacking_evidence(evidence_run: Path) -> None:
    g = run_graph(evidence_run)
    rows = {(str(r.article), str(r.status), str(r.need)) for r in g.query(QUERIES["art10_lacking"])}
    expected = {(c.obligation.article, c.status, n.need.label) for c in coverage(Evidence.load(evidence_run))
                if c.obligation.article.startswith("Art. 10") and c.status != "evidence" for n in c.needs
                if not n.met}
    assert rows == expected and ("Art. 10(5)", "partial", "erasure") in rows


def test_findings_in_checkpoint(evidence_run: Path) -> None:
    g = run_graph(evidence_run)
    ev = Evidence.load(evidence_run)
    sizes = sorted(int(p.stem) for p in (evidence_run / "checkpoints").iterdir() if p.stem.isdigit())
    first = sizes[0]
    rows = list(g.query(QUERIES["findings_in_checkpoint"], initBindings={"size": Literal(first)}))
    expected = [r["seq"] for r in ev.kind("finding") if r["seq"] < first]
    assert [int(r.seq) for r in rows] == expected and expected
    assert {str(r.rule) for r in rows} == {get(r, "rule_id") for r in ev.kind("finding")}
    assert "error" in {str(r.severity) for r in rows}


def test_evidence_for_post_market_section_and_uncovered(evidence_run: Path) -> None:
    g = run_graph(evidence_run)
    ev = Evidence.load(evidence_run)
    rows = list(g.query(QUERIES["evidence_for_annex_section"], initBindings={"section": Literal(9)}))
    kinds = {str(r.kind) for r in rows}
    assert {"drift.alert", "drift.reference", "inference", "review.decision"} <= kinds
    assert all(ev.seq(int(r.seq))["kind"] == str(r.kind) for r in rows)
    uncovered = {(str(r.framework), str(r.article)) for r in g.query(QUERIES["uncovered_obligations"])}
    assert ("EU-AI-Act", "Art. 73") in uncovered and ("EU-AI-Act", "Art. 72") not in uncovered
    run = next(g.subjects(RDF.type, URIRef(NS + "Run")))
    assert str(g.value(run, URIRef(NS + "runId"))) == ev.run_id


def test_export_cli_writes_turtle(evidence_run: Path, tmp_path: Path) -> None:
    from rdflib import Graph
    from typer.testing import CliRunner

    from torchwitness.cli import app

    out = tmp_path / "evidence.ttl"
    r = CliRunner().invoke(app, ["export", str(evidence_run), "--to", "rdf", "--target", str(out)])
    assert r.exit_code == 0, r.output
    assert len(Graph().parse(out, format="turtle")) == len(run_graph(evidence_run))
    r = CliRunner().invoke(app, ["export", str(evidence_run), "--to", "kafka"])
    assert r.exit_code != 0
