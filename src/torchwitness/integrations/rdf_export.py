"""An RDF graph (rdflib) of a run's evidence and the obligations map, in the published vocabulary
``torchwitness.ttl`` (namespace ``https://torchwitness.dev/ns#``), with example SPARQL queries.

Example::

    from torchwitness.integrations.rdf_export import QUERIES, run_graph
    g = run_graph("evidence/adult-run")
    for row in g.query(QUERIES["art10_lacking"]):
        print(row.article, row.status)
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from torchwitness.ledger.layout import Layout
from torchwitness.ledger.verify import verify_run
from torchwitness.report.evidence import Evidence, get
from torchwitness.report.obligations import coverage, load_map

NS = "https://torchwitness.dev/ns#"

QUERIES = {
    # Which Art. 10 obligations lack evidence in this run, and which needs are unmet?
    "art10_lacking": """
        PREFIX tw: <https://torchwitness.dev/ns#>
        PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
        SELECT ?article ?status ?need WHERE {
            ?a a tw:CoverageAssessment ; tw:assesses ?o ; tw:status ?status ; tw:unmetNeed ?n .
            ?o tw:article ?article . ?n rdfs:label ?need .
            FILTER(STRSTARTS(?article, "Art. 10") && ?status != "evidence")
        } ORDER BY ?article ?need""",
    # Which findings were first signed by the checkpoint of tree size ?size?
    "findings_in_checkpoint": """
        PREFIX tw: <https://torchwitness.dev/ns#>
        SELECT ?seq ?rule ?severity ?message WHERE {
            ?f a tw:Finding ; tw:seq ?seq ; tw:ruleId ?rule ; tw:severity ?severity ; tw:message ?message ;
               tw:coveredBy ?cp .
            ?cp tw:treeSize ?size .
        } ORDER BY ?seq""",
    # Which records evidence obligations documented in Annex IV section ?section?
    "evidence_for_annex_section": """
        PREFIX tw: <https://torchwitness.dev/ns#>
        SELECT DISTINCT ?seq ?kind ?article WHERE {
            ?r tw:evidences ?n ; tw:seq ?seq ; tw:kind ?kind .
            ?o tw:hasNeed ?n ; tw:article ?article ; tw:annexIVSection ?s .
            ?s tw:sectionNumber ?section .
        } ORDER BY ?seq ?article""",
    # Which obligations have no evidence at all, per framework?
    "uncovered_obligations": """
        PREFIX tw: <https://torchwitness.dev/ns#>
        SELECT ?framework ?article WHERE {
            ?a tw:assesses ?o ; tw:status "none" . ?o tw:framework ?framework ; tw:article ?article .
        } ORDER BY ?framework ?article""",
}


def vocabulary() -> Any:
    """The published vocabulary as an rdflib Graph."""
    rdflib = _rdflib()
    text = resources.files("torchwitness.integrations").joinpath("torchwitness.ttl").read_text()
    return rdflib.Graph().parse(data=text, format="turtle")


def _rdflib() -> Any:
    try:
        import rdflib
    except ImportError as e:
        raise ImportError("the RDF export needs rdflib: pip install 'torchwitness[rdf]'") from e
    return rdflib


def obligation_uri(obligation_id: str) -> str:
    return f"urn:torchwitness:obligation:{quote(obligation_id, safe=':.')}"


def run_graph(run_dir: str | Path) -> Any:
    """The run's records, checkpoints, findings, certificates, the obligations map and the run's coverage."""
    rdflib = _rdflib()
    from rdflib.namespace import RDF, RDFS, XSD

    Lit, U = rdflib.Literal, rdflib.URIRef
    tw = rdflib.Namespace(NS)
    ev = Evidence.load(run_dir)
    result = verify_run(run_dir)
    g = rdflib.Graph()
    g.bind("tw", tw)
    base = f"urn:torchwitness:run:{ev.run_id}"
    run = U(base)
    g.add((run, RDF.type, tw.Run))
    g.add((run, tw.runId, Lit(ev.run_id)))
    g.add((run, tw.rootHash, Lit("sha256:" + result.root.hex())))
    g.add((run, tw.signer, Lit(result.signer)))
    sizes = sorted(int(p.stem) for p in Layout(Path(run_dir)).checkpoint_files() if p.stem.isdigit())
    for size in sizes:
        cp = U(f"{base}/checkpoint/{size}")
        g.add((cp, RDF.type, tw.Checkpoint))
        g.add((cp, tw.treeSize, Lit(size, datatype=XSD.integer)))
        g.add((cp, tw.inRun, run))
    omap = load_map()
    for sec in omap.annex_iv:
        s = U(f"urn:torchwitness:annex-iv:{sec['section']}")
        g.add((s, RDF.type, tw.AnnexIVSection))
        g.add((s, tw.sectionNumber, Lit(int(sec["section"]), datatype=XSD.integer)))
        g.add((s, RDFS.label, Lit(sec["title"])))
    need_uris: dict[tuple[str, int], Any] = {}
    for o in omap.obligations:
        ou = U(obligation_uri(o.id))
        g.add((ou, RDF.type, tw.Obligation))
        g.add((ou, tw.framework, Lit(o.framework)))
        g.add((ou, tw.article, Lit(o.article)))
        g.add((ou, RDFS.label, Lit(o.title)))
        for n in o.annex_iv:
            g.add((ou, tw.annexIVSection, U(f"urn:torchwitness:annex-iv:{n}")))
        for i, need in enumerate(o.needs):
            nu = U(f"{obligation_uri(o.id)}/need/{i}")
            need_uris[(o.id, i)] = nu
            g.add((ou, tw.hasNeed, nu))
            g.add((nu, RDF.type, tw.Need))
            g.add((nu, RDFS.label, Lit(need.label)))
            for k in need.kinds:
                g.add((nu, tw.acceptsKind, Lit(k)))
    for r in ev.records:
        ru = U(f"{base}/record/{r['seq']}")
        kind = r["kind"]
        g.add((ru, RDF.type, tw.Finding if kind == "finding" else tw.Certificate if kind == "edit.certificate"
               else tw.Record))
        g.add((ru, tw.inRun, run))
        g.add((ru, tw.seq, Lit(r["seq"], datatype=XSD.integer)))
        g.add((ru, tw.kind, Lit(kind)))
        g.add((ru, tw.recordedAt, Lit(dt.datetime.fromtimestamp(r["ts"] / 1e6, dt.timezone.utc),
                                      datatype=XSD.dateTime)))
        if isinstance(r.get("step"), int):
            g.add((ru, tw.step, Lit(r["step"], datatype=XSD.integer)))
        covering = next((s for s in sizes if s > r["seq"]), None)
        if covering is not None:
            g.add((ru, tw.coveredBy, U(f"{base}/checkpoint/{covering}")))
        fields = {"finding": (("rule_id", tw.ruleId), ("severity", tw.severity), ("location", tw.location),
                              ("message", tw.message)),
                  "edit.certificate": (("verdict", tw.verdict), ("edit", tw.edit),
                                       ("subject_weights", tw.subjectWeights))}.get(kind, ())
        for key, prop in fields:
            v = get(r, key)
            if v is not None:
                g.add((ru, prop, Lit(str(v))))
    for c in coverage(ev, omap):
        au = U(f"{base}/coverage/{quote(c.obligation.id, safe=':.')}")
        g.add((au, RDF.type, tw.CoverageAssessment))
        g.add((au, tw.ofRun, run))
        g.add((au, tw.assesses, U(obligation_uri(c.obligation.id))))
        g.add((au, tw.status, Lit(c.status)))
        for i, nc in enumerate(c.needs):
            nu = need_uris[(c.obligation.id, i)]
            if not nc.met:
                g.add((au, tw.unmetNeed, nu))
            for seq in nc.seqs:
                g.add((U(f"{base}/record/{seq}"), tw.evidences, nu))
    return g
