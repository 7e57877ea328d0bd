"""diff flags a deliberately worse run and stays quiet on identical ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from torchwitness.cli import app
from torchwitness.errors import InputError, RegressionError
from torchwitness.report.diff import assert_no_regression, compare, load_policy, snapshot


def test_identical_runs_have_no_regression(rich_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(rich_run, copy)
    diff = assert_no_regression(rich_run, copy)
    assert diff.rows and {r.status for r in diff.rows} == {"unchanged"}
    r = CliRunner().invoke(app, ["diff", str(rich_run), str(copy), "--fail-on-regression"])
    assert r.exit_code == 0, r.output


def test_worse_run_is_flagged(rich_run: Path, worse_run: Path) -> None:
    rows = {r.name: r for r in compare(rich_run, worse_run).rows}
    assert rows["fairness:demographic_parity_difference(sex)"].status == "regressed"
    assert rows["finding:error:TW101@loss"].status == "regressed"
    assert rows["privacy:epsilon"].status == "regressed"
    assert rows["metric:accuracy"].status == "regressed"
    assert rows["finding:warn:TW301@optimizer"].status == "unchanged"
    # The reverse direction: the same changes read as improvements, the fixed ERROR finding included.
    back = {r.name: r for r in compare(worse_run, rich_run).rows}
    assert back["privacy:epsilon"].status == "improved" and back["finding:error:TW101@loss"].status == "improved"
    with pytest.raises(RegressionError, match="regression"):
        assert_no_regression(rich_run, worse_run)


def test_snapshot_values_come_from_records(rich_run: Path) -> None:
    from torchwitness.report.evidence import Evidence, get

    ev = Evidence.load(rich_run)
    snap = snapshot(rich_run)
    eps = snap["privacy:epsilon"]
    assert eps.value == get(ev.seq(eps.seq), "epsilon") and ev.seq(eps.seq)["kind"] == "privacy.epsilon"


def test_policy_tolerance_and_cli_exit_code(rich_run: Path, worse_run: Path, tmp_path: Path) -> None:
    lenient = tmp_path / "lenient.json"
    lenient.write_text(json.dumps({"tolerance": {"default": 0.0, "metric:": 0.05, "fairness:": 1.0,
                                                 "privacy:": 5.0}}))
    rows = {r.name: r for r in compare(rich_run, worse_run, load_policy(lenient)).rows}
    assert rows["privacy:epsilon"].status == "unchanged" and rows["metric:accuracy"].status == "unchanged"
    assert rows["finding:error:TW101@loss"].status == "regressed"  # a new ERROR finding has no tolerance
    r = CliRunner().invoke(app, ["diff", str(rich_run), str(worse_run), "--fail-on-regression", "--json"])
    assert r.exit_code == 4
    assert any(row["status"] == "regressed" for row in json.loads(r.stdout))
    r = CliRunner().invoke(app, ["diff", str(rich_run), str(worse_run)])
    assert r.exit_code == 0  # without the flag it only reports
    bad = tmp_path / "bad.json"
    bad.write_text('{"tolerance": {"default": -1}}')
    with pytest.raises(InputError):
        load_policy(bad)
