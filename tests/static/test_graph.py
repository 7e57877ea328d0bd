from __future__ import annotations

import hashlib

from torchwitness.rules.static import scan_paths
from torchwitness.rules.static.graph import scan_graph

SOURCE = '''import torch

def load_checkpoint(path):
    return torch.load(path, weights_only=False)

def build(params):
    return torch.optim.Adam(params, weight_decay=0.01)
'''

QUERY = """
PREFIX tw: <https://torchwitness.dev/ns#>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
SELECT ?path ?fname ?rid ?obligation WHERE {
    ?hit a tw:Finding ; tw:rule ?rule ; tw:inFunction ?fn ; tw:inFile ?file .
    ?rule tw:id ?rid ; tw:bearsOn ?obl .
    ?obl rdfs:label ?obligation .
    ?fn tw:name ?fname .
    ?file tw:path ?path .
    ?use a tw:ApiUse ; tw:inFunction ?fn ; tw:api ?api .
    ?api rdfs:label "torch.load" .
}
"""


def test_sparql_joins_findings_functions_api_uses_and_obligations(tmp_path):
    (tmp_path / "train.py").write_text(SOURCE)
    g = scan_graph(scan_paths([tmp_path], facts=True))
    rows = {tuple(str(v) for v in row) for row in g.query(QUERY)}
    assert rows == {("train.py", "load_checkpoint", "TW602", "eu-ai-act:15(5)")}
    # files are content-addressed, the same digest the scan.summary ledger record carries
    digest = hashlib.sha256(SOURCE.encode()).hexdigest()
    assert any(str(s) == f"urn:sha256:{digest}" for s in g.subjects())
    assert "tw:bearsOn" in g.serialize(format="turtle")


def test_cli_writes_turtle(tmp_path):
    import rdflib
    from typer.testing import CliRunner

    from torchwitness.cli import app

    (tmp_path / "train.py").write_text(SOURCE)
    out = tmp_path / "scan.ttl"
    result = CliRunner().invoke(app, ["scan", str(tmp_path / "train.py"), "--rdf", str(out), "-f", "json"])
    assert result.exit_code == 1  # TW602 with weights_only=False is an error
    g = rdflib.Graph().parse(out)
    assert len(list(g.query(QUERY))) == 1


def test_graph_joins_the_runs_ledger_records(tmp_path):
    import rdflib
    from typer.testing import CliRunner

    from torchwitness.cli import app
    from torchwitness.ledger import iter_records
    from torchwitness.rules.static.graph import artifact_iri, run_iri

    (tmp_path / "train.py").write_text(SOURCE)
    out, run_dir = tmp_path / "scan.ttl", tmp_path / "run"
    CliRunner().invoke(app, ["scan", str(tmp_path / "train.py"), "--rdf", str(out), "--run", str(run_dir)])
    (summary,) = iter_records(run_dir, kinds={"scan.summary"})
    # a run-evidence graph keys runs by the records' run id and artefacts by digest: both must meet the scan graph
    evidence = rdflib.Graph().parse(out)
    q = """PREFIX tw: <https://torchwitness.dev/ns#>
           SELECT ?path WHERE { ?run tw:hasScan ?scan . ?scan tw:scanned ?file . ?file tw:path ?path }"""
    rows = list(evidence.query(q, initBindings={"run": rdflib.URIRef(run_iri(summary["run"]))}))
    assert [str(r[0]) for r in rows] == ["train.py"]
    digest = summary["data"]["file_digests"]["train.py"]
    assert (rdflib.URIRef(artifact_iri(digest)), None, None) in evidence
