"""``torchwitness audit``: phases, the factory protocol, reports and exit codes; bad input is one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from torchwitness.ledger import iter_records
from torchwitness.report import load_sarif_schema

Cli = Callable[..., tuple[int, str, str]]
FACTORIES = Path(__file__).with_name("audit_factories.py")


def findings_of(out: str) -> dict[str, str]:
    return {f["rule_id"]: f["severity"] for f in json.loads(out)["findings"]}


@pytest.mark.parametrize(("spec", "message", "code"), [
    ("audit_factories", "must look like 'package.module:function'", 2),
    ("no_such_pkg.mod:setup", "cannot import 'no_such_pkg.mod': no module named 'no_such_pkg'", 2),
    (f"{FACTORIES}:nothing_here", "has no attribute 'nothing_here'", 2),
    (f"{FACTORIES}:not_callable", "is a int, not a callable", 2),
    (f"{FACTORIES.with_name('missing.py')}:f", "no such file", 2),
    (f"{FACTORIES}:raises", "raised RuntimeError: the dataset path is not configured", 4),
])
def test_bad_factories_give_one_readable_line(cli: Cli, spec: str, message: str,
                                              code: int) -> None:
    rc, out, err = cli("audit", spec)
    assert rc == code and message in err and err.strip().count("\n") == 0 and out == ""


def test_findings_of_a_missing_run_is_one_line(cli: Cli, tmp_path: Path) -> None:
    rc, _, err = cli("findings", str(tmp_path / "nowhere"))
    assert rc != 0 and err.strip().count("\n") == 0 and "nowhere" in err


def test_unknown_rule_id_gives_one_readable_line(cli: Cli) -> None:
    rc, _, err = cli("audit", f"{FACTORIES}:adam_l2", "--select", "TW9999")
    assert rc == 2 and "unknown rule ID 'TW9999'" in err and err.strip().count("\n") == 0


def test_unknown_phase_gives_one_readable_line(cli: Cli) -> None:
    rc, _, err = cli("audit", f"{FACTORIES}:adam_l2", "--phase", "fit")
    assert rc == 2 and "unknown phase 'fit'" in err and err.strip().count("\n") == 0


def test_train_phase_needs_an_optimizer_and_batches(cli: Cli) -> None:
    rc, _, err = cli("audit", f"{FACTORIES}:model_only", "--phase", "train")
    assert rc == 2 and "needs an optimizer" in err


def test_init_phase_module_factory_and_fail_level(cli: Cli,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FACTORIES.parent))
    rc, out, _ = cli("audit", "audit_factories:adam_l2", "--phase", "init", "-f", "json")
    assert rc == 0 and findings_of(out)["TW302"] == "warn"
    rc, _, _ = cli("audit", "audit_factories:adam_l2", "-f", "json", "--fail-level", "warn")
    assert rc == 1
    rc, out, _ = cli("audit", "audit_factories:adam_l2", "-f", "json", "--fail-level", "warn",
                     "--ignore", "TW302")
    assert rc == 0 and "TW302" not in findings_of(out)


def test_static_phase_judges_the_model_alone(cli: Cli) -> None:
    rc, out, _ = cli("audit", f"{FACTORIES}:adam_l2", "--phase", "static", "-f", "json")
    assert rc == 0 and "TW302" not in findings_of(out)  # the optimizer is not looked at
    rc, out, _ = cli("audit", f"{FACTORIES}:model_only", "--phase", "static", "-f", "json")
    assert findings_of(out).get("TW410") == "info"  # even kernel, judged from the architecture


def test_train_phase_healthy_is_quiet_buggy_is_caught(cli: Cli, tmp_path: Path) -> None:
    rc, out, _ = cli("audit", f"{FACTORIES}:healthy", "--phase", "train", "--steps", "12", "-f", "json",
                     "--fail-level", "warn")
    assert rc == 0, out
    assert all(sev not in ("warn", "error") for sev in findings_of(out).values())
    run = tmp_path / "run"
    rc, out, err = cli("audit", f"{FACTORIES}:left_in_eval", "--phase", "train", "--steps", "6",
                       "--run", str(run), "-f", "json")
    assert rc == 1 and findings_of(out)["TW401"] == "error" and f"evidence in {run}" in err
    recorded = [r["data"] for r in iter_records(run, kinds={"finding"})]
    assert any(d["rule_id"] == "TW401" and d["final"] for d in recorded)
    assert cli("verify", str(run))[0] == 0
    # the same findings, read back from the ledger
    rc, again, _ = cli("findings", str(run), "-f", "json")
    assert rc == 1 and json.loads(again)["findings"] == json.loads(out)["findings"]


def test_training_step_and_callable_batches(cli: Cli) -> None:
    rc, out, _ = cli("audit", f"{FACTORIES}:callable_batches_with_training_step", "--phase", "train",
                     "--steps", "8", "-f", "json", "--fail-level", "warn")
    assert rc == 0, out


def test_sarif_file_and_baseline_round(cli: Cli, tmp_path: Path) -> None:
    sarif, base = tmp_path / "audit.sarif", tmp_path / "baseline.json"
    rc, _, err = cli("audit", f"{FACTORIES}:left_in_eval", "--phase", "train", "--steps", "6", "-f", "sarif",
                     "-o", str(sarif), "--write-baseline", str(base))
    assert rc == 1 and "wrote sarif report" in err
    log = json.loads(sarif.read_text())
    jsonschema.Draft4Validator(load_sarif_schema()).validate(log)
    results = log["runs"][0]["results"]
    assert "TW401" in {r["ruleId"] for r in results}
    # findings inside the model also point at the factory's definition, so code scanning can show them
    line = next(i for i, text in enumerate(FACTORIES.read_text().splitlines(), 1) if "def left_in_eval" in text)
    for r in results:
        physical = r["locations"][0]["physicalLocation"]
        assert physical["artifactLocation"]["uri"].endswith("audit_factories.py")
        assert physical["region"] == {"startLine": line}
    rc, out, _ = cli("audit", f"{FACTORIES}:left_in_eval", "--phase", "train", "--steps", "6",
                     "--baseline", str(base))
    assert rc == 0 and "suppressed by the baseline" in out
