"""Every view that states what a run holds refuses a run that does not verify (exit 3), unless --draft; --key pins
the signer of report, card, coverage, findings and diff."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

import torchwitness as tw
from torchwitness.cli import app


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    with tw.Run(root / "good") as run:
        run.log_params({"lr": 0.1})
        for step in range(3):
            run.log_metrics({"train_loss": 1.0 / (step + 1)}, step=step)
        key = run.ledger.public_key.fingerprint
    shutil.copytree(root / "good", root / "bad")
    segment = next((root / "bad" / "records").glob("*.jsonl"))
    segment.write_bytes(segment.read_bytes().replace(b"train_loss", b"train_lost", 1))
    return root, key


@pytest.mark.parametrize("verb", [["coverage"], ["findings"], ["diff", "{good}"], ["report", "-f", "md"], ["card"]])
def test_a_tampered_run_is_refused_unless_draft(runs, verb, tmp_path):
    root, _ = runs
    args = [a.format(good=root / "good") for a in verb]
    out = ["-o", str(tmp_path / "out")] if verb[0] in ("report", "card") else []
    refused = CliRunner().invoke(app, [*args, str(root / "bad"), *out])
    assert refused.exit_code == 3 and "Traceback" not in refused.output, refused.output
    drafted = CliRunner().invoke(app, [*args, str(root / "bad"), *out, "--draft"])
    shown = drafted.output + ((tmp_path / "out").read_text() if out else "")
    assert drafted.exit_code in (0, 1) and "NOT VERIFIED" in shown, drafted.output
    fine = CliRunner().invoke(app, [*args, str(root / "good"), *out])
    assert fine.exit_code in (0, 1), fine.output


@pytest.mark.parametrize("verb", [["coverage"], ["findings"], ["report", "-f", "md"], ["card"]])
def test_key_pins_the_signer(runs, verb, tmp_path):
    root, key = runs
    out = ["-o", str(tmp_path / "out")] if verb[0] in ("report", "card") else []
    assert CliRunner().invoke(app, [*verb, str(root / "good"), *out, "--key", key]).exit_code in (0, 1)
    wrong = CliRunner().invoke(app, [*verb, str(root / "good"), *out, "--key", "sha256:" + "0" * 64])
    assert wrong.exit_code == 3, wrong.output


def test_show_lists_a_tampered_run_with_a_warning(runs):
    root, _ = runs
    result = CliRunner().invoke(app, ["show", str(root / "bad"), "--json"])
    assert result.exit_code == 0 and "NOT VERIFIED" in result.output and "train_lost" in result.output
