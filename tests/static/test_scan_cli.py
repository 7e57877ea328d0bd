from __future__ import annotations

import json

from typer.testing import CliRunner

from torchwitness.cli import app
from torchwitness.ledger import iter_records, verify_run

SOURCE = "import torch\nopt = torch.optim.Adam(ps, weight_decay=0.1)\nsd = torch.load('m.pt', weights_only=False)\n"


def test_scan_json_exit_code_and_ledger(tmp_path):
    (tmp_path / "train.py").write_text(SOURCE)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["scan", str(tmp_path / "train.py"), "-f", "json", "--run", str(run_dir)])
    assert result.exit_code == 1, result.output  # TW602 at error level
    found = json.loads(result.stdout)["findings"]
    assert sorted(f["rule_id"] for f in found) == ["TW602", "TW607"]
    records = list(iter_records(run_dir, kinds={"finding", "scan.summary"}))
    assert [r["kind"] for r in records] == ["finding", "finding", "scan.summary"]
    summary = records[-1]["data"]
    assert summary["counts"] == {"TW602": 1, "TW607": 1}
    assert summary["file_digests"]["train.py"].startswith("sha256:")
    verify_run(run_dir, deep=True)


def test_scan_select_and_fail_level(tmp_path):
    (tmp_path / "train.py").write_text(SOURCE)
    result = CliRunner().invoke(app, ["scan", str(tmp_path), "-f", "json", "--select", "TW607"])
    assert result.exit_code == 0 and [f["rule_id"] for f in json.loads(result.stdout)["findings"]] == ["TW607"]
    result = CliRunner().invoke(app, ["scan", str(tmp_path), "-f", "json", "--ignore", "TW602",
                                      "--fail-level", "warn"])
    assert result.exit_code == 1


def test_scan_sarif_validates_and_points_at_source(tmp_path):
    import jsonschema

    from torchwitness.report import load_sarif_schema

    (tmp_path / "train.py").write_text(SOURCE)
    out = tmp_path / "scan.sarif"
    result = CliRunner().invoke(app, ["scan", str(tmp_path), "-f", "sarif", "-o", str(out), "--fail-level", "never"])
    assert result.exit_code == 0, result.output
    log = json.loads(out.read_text())
    jsonschema.validate(log, load_sarif_schema())
    results = log["runs"][0]["results"]
    assert sorted(r["ruleId"] for r in results) == ["TW602", "TW607"]
    where = {r["ruleId"]: r["locations"][0]["physicalLocation"] for r in results}
    assert where["TW602"]["artifactLocation"]["uri"] == "train.py" and where["TW602"]["region"]["startLine"] == 3


def test_scan_counts_and_baseline(tmp_path):
    (tmp_path / "train.py").write_text(SOURCE)
    baseline = tmp_path / "baseline.json"
    first = CliRunner().invoke(app, ["scan", str(tmp_path), "--write-baseline", str(baseline), "-f", "json"])
    assert first.exit_code == 1
    again = CliRunner().invoke(app, ["scan", str(tmp_path), "--baseline", str(baseline), "-f", "json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["findings"] == []
    counted = CliRunner().invoke(app, ["scan", str(tmp_path), "--counts"])
    assert counted.exit_code == 1 and json.loads(counted.stdout)["counts"] == {"TW602": 1, "TW607": 1}


def test_scan_exits_2_when_a_file_could_not_be_parsed(tmp_path):
    (tmp_path / "ok.py").write_text("import torch\nx = torch.zeros(2)\n")
    (tmp_path / "broken.py").write_text("def f(:\n    torch.load(p)\n")
    result = CliRunner().invoke(app, ["scan", str(tmp_path), "-f", "json"])
    assert result.exit_code == 2 and "broken.py" in result.stderr and "could not be checked" in result.stderr
    assert json.loads(result.stdout)["findings"] == []  # the report is still written
    counted = CliRunner().invoke(app, ["scan", str(tmp_path), "--counts"])
    assert counted.exit_code == 2 and json.loads(counted.stdout)["parse_errors"] == 1
    allowed = CliRunner().invoke(app, ["scan", str(tmp_path), "-f", "json", "--allow-unparsable"])
    assert allowed.exit_code == 0 and "broken.py" in allowed.stderr
