"""The rule registry refuses surprises; findings de-duplicate and reach the ledger."""

from __future__ import annotations

import pytest

import torchwitness as tw
from torchwitness.errors import InputError
from torchwitness.ledger import iter_records
from torchwitness.rules import Finding, FindingSet, Phase, Severity, all_rules, get_rule, rule, select_rules


@rule("ZZ901", name="test-demo-rule", title="A rule for tests", severity="warn", phase="step",
      remediation="Do the right thing.", obligations=["EU-AI-Act:Art.15"])
def _demo_rule() -> list[Finding]:
    """Problem, example and fix of a test rule."""
    return []


def test_registered_rule_is_listed_with_its_doc() -> None:
    r = get_rule("zz901")
    assert r.name == "test-demo-rule" and r.severity is Severity.WARN and r.phase is Phase.STEP
    assert r.doc == "Problem, example and fix of a test rule."
    assert r in all_rules() and get_rule("test-demo-rule") is r


def test_duplicates_and_bad_ids_are_refused() -> None:
    with pytest.raises(InputError, match="already registered"):
        rule("ZZ901", name="other", title="t", severity="info", phase="step", remediation="r")(lambda: [])
    with pytest.raises(InputError, match="must look like"):
        rule("bad-id", name="x", title="t", severity="info", phase="step", remediation="r")(lambda: [])


def test_unknown_ids_suggest_close_matches() -> None:
    with pytest.raises(InputError, match=r"unknown rule ID 'ZZ902'; did you mean ZZ901"):
        get_rule("ZZ902")
    with pytest.raises(InputError, match="unknown rule ID"):
        select_rules(["QQ1"])


def test_select_and_ignore_take_prefixes() -> None:
    assert "ZZ901" in select_rules(["ZZ9"])
    assert "ZZ901" not in select_rules(["ZZ9"], ["ZZ901"])


def test_severity_parsing() -> None:
    assert Severity.parse("ERROR") > Severity.parse("warn") > Severity.INFO > Severity.HINT
    with pytest.raises(InputError, match="unknown severity"):
        Severity.parse("fatal")


def test_findings_deduplicate_and_are_recorded(tmp_path) -> None:
    with tw.Run(tmp_path / "run") as run:
        findings = FindingSet(run.record)
        for step in (3, 7, 5):
            findings.add(Finding.of("ZZ901", "model.fc1", f"bad at {step}", step=step))
        findings.add(Finding.of("ZZ901", "model.fc2", "also bad", step=9))
        findings.summarise()
    by_location = {f.location: f for f in findings}
    assert by_location["model.fc1"].count == 3
    assert (by_location["model.fc1"].first_step, by_location["model.fc1"].last_step) == (3, 7)
    records = [r["data"] for r in iter_records(tmp_path / "run", kinds={"finding"})]
    first = [r for r in records if not r["final"]]
    final = [r for r in records if r["final"]]
    assert len(first) == 2 and len(final) == 2
    assert {r["location"]: r["count"] for r in final} == {"model.fc1": 3, "model.fc2": 1}
    round_trip = Finding.from_dict(by_location["model.fc1"].to_dict())
    assert round_trip.to_dict() == by_location["model.fc1"].to_dict()
    assert round_trip.fingerprint == Finding.of("ZZ901", "model.fc1", "other message").fingerprint
