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
