"""An RDF view of a static scan: files, functions, API uses, rule hits, the rules and the obligations they bear on.

IRIs are chosen so that a run's evidence graph can join on them: files by content digest
(``urn:sha256:<hex>``, the same digests the ``scan.summary`` record holds), rules by ID
(``https://torchwitness.dev/rule/TW602``), obligations by their catalogue text
(``https://torchwitness.dev/obligation/eu-ai-act/15-5``), the run by its ledger run id
(``urn:torchwitness:run:<id>``). Terms live in ``https://torchwitness.dev/ns#``.

Example (needs ``pip install 'torchwitness[rdf]'``)::

    from torchwitness.rules.static import scan_paths
    from torchwitness.rules.static.graph import scan_graph

    g = scan_graph(scan_paths(["train.py"], facts=True))
    g.query("SELECT ?fn WHERE { ?hit tw:rule <https://torchwitness.dev/rule/TW602> ; tw:inFunction ?fn }")
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from torchwitness.errors import InputError
from torchwitness.rules.catalogue import get_rule
from torchwitness.rules.static.engine import FileResult, ScanResult

NS = "https://torchwitness.dev/ns#"
BASE = "https://torchwitness.dev/"


def rule_iri(rule_id: str) -> str:
    return f"{BASE}rule/{rule_id}"


def obligation_iri(obligation: str) -> str:
    """``eu-ai-act:15(5)`` -> ``https://torchwitness.dev/obligation/eu-ai-act/15-5``."""
    parts = [re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in obligation.split(":")]
    return f"{BASE}obligation/{'/'.join(parts)}"


def artifact_iri(sha256: str) -> str:
    """A content-addressed file (``sha256:<hex>``) -> ``urn:sha256:<hex>``."""
    return f"urn:{sha256}"


def run_iri(run_id: str) -> str:
    """The run whose ledger records the scan (``run`` field of every record)."""
    return f"urn:torchwitness:run:{run_id}"


def api_iri(name: str) -> str:
    return f"{BASE}api/{name}"


def _rdflib() -> Any:
    try:
        import rdflib
    except ImportError as e:
        raise InputError("the RDF view needs rdflib: pip install 'torchwitness[rdf]'") from e
    return rdflib


def scan_graph(result: ScanResult, *, run_id: str | None = None) -> Any:
    """An ``rdflib.Graph`` of ``result`` (scan with ``facts=True`` to include functions and API uses).

    ``run_id``: the run whose ledger holds this scan's records; the graph then says ``run tw:hasScan scan``.
    """
    rdflib = _rdflib()
    from rdflib import RDF, RDFS, XSD, Literal, URIRef
    from rdflib.namespace import Namespace

    tw = Namespace(NS)
    g = rdflib.Graph()
    g.bind("tw", tw)
    scan_id = hashlib.sha256("\n".join(sorted(f.sha256 for f in result.files)).encode()).hexdigest()
    scan = URIRef(f"urn:torchwitness:scan:{scan_id}")
    g.add((scan, RDF.type, tw.StaticScan))
    g.add((scan, tw.root, Literal(str(result.root))))
    g.add((scan, tw.durationSeconds, Literal(round(result.duration_s, 3), datatype=XSD.decimal)))
    if run_id is not None:
        g.add((URIRef(run_iri(run_id)), RDF.type, tw.Run))
        g.add((URIRef(run_iri(run_id)), tw.hasScan, scan))
    rules_seen: set[str] = set()
    for fr in result.files:
        if not fr.sha256:
            continue
        file = URIRef(artifact_iri(fr.sha256))
        g.add((file, RDF.type, tw.SourceFile))
        g.add((file, tw.path, Literal(fr.path)))
        g.add((file, tw.sha256, Literal(fr.sha256)))
        g.add((scan, tw.scanned, file))
        if fr.error:
            g.add((file, tw.parseError, Literal(fr.error)))
        functions = {q: URIRef(f"{file}#{q}") for q, _, _ in fr.functions}
        for q, first, _ in fr.functions:
            g.add((functions[q], RDF.type, tw.Function))
            g.add((functions[q], tw.name, Literal(q)))
            g.add((functions[q], tw.definedIn, file))
            g.add((functions[q], tw.line, Literal(first)))
        for use in fr.api_uses:
            node = URIRef(f"{file}#L{use.line}:{use.name}")
            g.add((node, RDF.type, tw.ApiUse))
            g.add((node, tw.api, URIRef(api_iri(use.name))))
            g.add((URIRef(api_iri(use.name)), RDFS.label, Literal(use.name)))
            g.add((node, tw.inFile, file))
            g.add((node, tw.line, Literal(use.line)))
            if use.scope in functions:
                g.add((node, tw.inFunction, functions[use.scope]))
        for f in fr.findings:
            line = f.details.get("line", 0)
            hit = URIRef(f"{file}#hit:{f.rule_id}:{line}:{f.details.get('col', 0)}")
            g.add((hit, RDF.type, tw.Finding))
            g.add((hit, tw.rule, URIRef(rule_iri(f.rule_id))))
            g.add((hit, tw.severity, Literal(str(f.severity))))
            g.add((hit, tw.message, Literal(f.message)))
            g.add((hit, tw.fingerprint, Literal(f.fingerprint)))
            g.add((hit, tw.inFile, file))
            g.add((hit, tw.line, Literal(line)))
            scope = _innermost(fr, line)
            if scope:
                g.add((hit, tw.inFunction, functions[scope]))
            rules_seen.add(f.rule_id)
    for rule_id in sorted(set(result.rules) | rules_seen):
        r = get_rule(rule_id)
        node = URIRef(rule_iri(r.id))
        g.add((node, RDF.type, tw.Rule))
        g.add((node, tw.id, Literal(r.id)))
        g.add((node, RDFS.label, Literal(r.title)))
        g.add((node, tw.severity, Literal(str(r.severity))))
        g.add((node, tw.phase, Literal(str(r.phase))))
        for text in r.obligations:
            obl = URIRef(obligation_iri(text))
            g.add((node, tw.bearsOn, obl))
            g.add((obl, RDF.type, tw.Obligation))
            g.add((obl, RDFS.label, Literal(text)))
    return g


def _innermost(fr: FileResult, line: int) -> str | None:
    best: tuple[int, str] | None = None
    for q, first, last in fr.functions:
        if first <= line <= last and (best is None or first > best[0]):
            best = (first, q)
    return best[1] if best else None
