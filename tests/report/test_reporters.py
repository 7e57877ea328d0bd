"""Reporters: JSON round-trip, SARIF against the official 2.1.0 schema, baselines, select/ignore, fail levels."""

from __future__ import annotations

import io
import json
from pathlib import Path

import jsonschema
import pytest

from torchwitness.errors import InputError
from torchwitness.report import emit, load_baseline, load_sarif_schema, read_findings, to_sarif, write_baseline
from torchwitness.rules.catalogue import Phase, Severity, get_rule
from torchwitness.rules.findings import Finding


def _findings() -> list[Finding]:
    return [
        Finding("TW101", Severity.ERROR, Phase.FORWARD, "model", "loss is NaN", count=3, first_step=4, last_step=9),
        Finding("TW103", Severity.WARN, Phase.BACKWARD, "model.encoder.fc1", "grad norm 2.1e+05", first_step=0,
                last_step=0, ranks=(0, 1), details={"norm": 2.1e5, "per_layer": [1.0, 2.5]}),
        Finding("TW410", Severity.INFO, Phase.INIT, "model.conv", "kernel 4x4"),
        Finding("TW450", Severity.HINT, Phase.INIT, "model", "CUDA available"),
        # located in source, the way static scanners report
        Finding("TW302", Severity.WARN, Phase.INIT, "train/loop.py:12:5", "Adam(weight_decay=0.01)"),
        Finding("TW304", Severity.ERROR, Phase.BACKWARD, "step", "grads accumulate",
                details={"path": "/abs/code/train.py", "line": 40}),
    ]


def _validator() -> jsonschema.Draft4Validator:
    schema = load_sarif_schema()
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def test_json_report_round_trips_every_field() -> None:
    findings = _findings()
    out = io.StringIO()
    emit(findings, "json", stream=out, show_hints=True, fail_level="never")
    back = read_findings(out.getvalue())
    key = lambda f: (f.rule_id, f.location)  # noqa: E731
    assert sorted(back, key=key) == sorted(findings, key=key)
    doc = json.loads(out.getvalue())
    assert doc["summary"]["error"] == 2 and doc["summary"]["hint"] == 1


def test_sarif_validates_against_the_official_schema() -> None:
    log = to_sarif(_findings(), source_root=Path("/abs/code"))
    _validator().validate(log)
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    for result in run["results"]:
        rule = rules[result["ruleIndex"]]
        assert rule["id"] == result["ruleId"]
        cat = get_rule(result["ruleId"])
        assert rule["shortDescription"]["text"] == cat.title and cat.remediation in rule["help"]["text"]
        assert result["partialFingerprints"]["torchwitness/v1"].startswith("sha256:")
    by_id = {r["ruleId"]: r for r in run["results"]}
    assert [by_id[i]["level"] for i in ("TW101", "TW103", "TW410", "TW450")] == ["error", "warning", "note", "note"]
    assert by_id["TW103"]["locations"][0]["logicalLocations"][0] == {
        "fullyQualifiedName": "model.encoder.fc1", "name": "fc1", "kind": "module"}
    phys = by_id["TW302"]["locations"][0]["physicalLocation"]
    assert phys == {"artifactLocation": {"uri": "train/loop.py", "uriBaseId": "%SRCROOT%"},
                    "region": {"startLine": 12, "startColumn": 5}}
    assert by_id["TW304"]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "file:///abs/code/train.py"
    assert by_id["TW101"]["properties"] == {"severity": "error", "phase": "forward", "count": 3, "firstStep": 4,
                                            "lastStep": 9}


def test_sarif_anchor_gives_model_findings_a_file() -> None:
    log = to_sarif(_findings(), anchor=("mypkg/train.py", 7))
    _validator().validate(log)
    by_id = {r["ruleId"]: r["locations"][0] for r in log["runs"][0]["results"]}
    assert by_id["TW103"]["logicalLocations"][0]["fullyQualifiedName"] == "model.encoder.fc1"
    assert by_id["TW103"]["physicalLocation"] == {"artifactLocation": {"uri": "mypkg/train.py",
                                                                       "uriBaseId": "%SRCROOT%"},
                                                  "region": {"startLine": 7}}
    assert by_id["TW302"]["physicalLocation"]["region"]["startLine"] == 12  # its own source location wins


def test_schema_check_is_not_vacuous() -> None:
    log = to_sarif(_findings()[:1])
    log["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        _validator().validate(log)


def test_sarif_tolerates_a_rule_not_installed_here() -> None:
    log = to_sarif([Finding("ZZ999", Severity.WARN, Phase.STEP, "model", "from elsewhere")])
    _validator().validate(log)
    assert "not installed" in log["runs"][0]["tool"]["driver"]["rules"][0]["shortDescription"]["text"]


def test_baseline_suppresses_known_findings_only(tmp_path: Path) -> None:
    base = tmp_path / "baseline.json"
    old = _findings()[:2]
    write_baseline(old, base)
    new = Finding("TW101", Severity.ERROR, Phase.FORWARD, "model.head", "loss is NaN")
    # a known finding whose message and counts changed is still the same finding
    changed = Finding("TW101", Severity.ERROR, Phase.FORWARD, "model", "loss is inf", count=99)
    out = emit([changed, old[1], new], "json", stream=io.StringIO(), baseline=base)
    assert [f.location for f in out.shown] == ["model.head"] and out.suppressed == 2 and out.exit_code == 1
    out = emit([changed, old[1]], "json", stream=io.StringIO(), baseline=base)
    assert out.shown == [] and out.exit_code == 0


@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_an_earlier_report_serves_as_baseline(tmp_path: Path, fmt: str) -> None:
    report = tmp_path / f"report.{fmt}"
    emit(_findings(), fmt, report, show_hints=True)
    assert load_baseline(report) == {f.fingerprint for f in _findings()}


def test_bad_baseline_files_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such baseline"):
        load_baseline(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InputError, match=r"baseline file .*x\.json is not JSON"):
        load_baseline(tmp_path / "x.json")


def test_select_ignore_by_id_and_prefix() -> None:
    sink = io.StringIO()
    assert {f.rule_id for f in emit(_findings(), "json", stream=sink, select=["TW1"]).shown} == {"TW101", "TW103"}
    assert {f.rule_id for f in emit(_findings(), "json", stream=sink, ignore=["TW1", "TW30"]).shown} == {"TW410"}
    with pytest.raises(InputError, match="unknown rule ID 'TW999'"):
        emit(_findings(), "json", stream=sink, select=["TW999"])


@pytest.mark.parametrize(("level", "code"), [("error", 1), ("warn", 1), ("never", 0)])
def test_fail_level_sets_exit_code(level: str, code: int) -> None:
    assert emit(_findings(), "json", stream=io.StringIO(), fail_level=level).exit_code == code
    warn_only = [f for f in _findings() if f.severity <= Severity.WARN]
    expected = 0 if level == "error" else code
    assert emit(warn_only, "json", stream=io.StringIO(), fail_level=level).exit_code == expected


def test_console_groups_by_severity_and_hides_hints(tmp_path: Path) -> None:
    out = tmp_path / "report.txt"
    emit(_findings(), "console", out, title="audit")
    text = out.read_text()
    assert text.index("ERROR (2)") < text.index("WARN (2)") < text.index("INFO (1)")
    assert "TW450" not in text and "1 performance hint(s) hidden" in text
    assert "nonfinite-loss · correctness" in text and "steps 4–9 (×3)" in text
    emit(_findings(), "console", out, show_hints=True)
    assert "HINT (1)" in out.read_text()


def test_unknown_format_is_refused() -> None:
    with pytest.raises(InputError, match="unknown format 'xml'"):
        emit([], "xml")


def test_select_and_ignore_reach_consequences():
    """--select of a rule recorded as a consequence shows it (a CI gate on NaN losses); --ignore of a root keeps
    its other consequences, each on its own."""
    from torchwitness.report.emit import filter_findings

    def finding(rule: str, severity: Severity, caused_by: str | None = None) -> Finding:
        return Finding(rule_id=rule, severity=severity, phase=Phase.FORWARD, location="model", message=rule,
                       caused_by=caused_by)

    root = finding("TW201", Severity.ERROR)
    root.consequences = [finding("TW101", Severity.ERROR, "TW201@model"),
                         finding("TW108", Severity.WARN, "TW201@model")]
    assert [f.rule_id for f in filter_findings([root], select=["TW101"]).shown] == ["TW101"]
    assert [f.rule_id for f in filter_findings([root], ignore=["TW201"]).shown] == ["TW101", "TW108"]
    kept = filter_findings([root], ignore=["TW108"]).shown
    assert [f.rule_id for f in kept] == ["TW201"] and [c.rule_id for c in kept[0].consequences] == ["TW101"]
    assert len(root.consequences) == 2  # the caller's findings are left as they were
