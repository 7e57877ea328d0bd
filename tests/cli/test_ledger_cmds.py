"""The ledger commands end to end, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import torchwitness as tw


def tw_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torchwitness", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "run"
    with tw.Run(root, config={"lr": 0.1}) as run:
        for epoch in range(3):
            run.record("train.epoch", {"loss": 1.0 / (epoch + 1), "name": "Zoë"}, step=epoch)
    return root


def test_version() -> None:
    proc = tw_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"torchwitness {tw.__version__}"


def test_verify_summary_and_key_pin(run_dir: Path) -> None:
    proc = tw_cli("verify", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK 5 records, 1 checkpoints, root sha256:")
    signer = json.loads((run_dir / "ledger.json").read_text())["signer"]
    assert tw_cli("verify", str(run_dir), "--key", signer).returncode == 0
    wrong = tw_cli("verify", str(run_dir), "--key", "sha256:" + "0" * 64)
    assert wrong.returncode == 3 and "not by the pinned key" in wrong.stderr


def test_show_json_and_kind_filter(run_dir: Path) -> None:
    proc = tw_cli("show", str(run_dir), "--kind", "train.epoch", "--json")
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    assert records[0]["data"] == {"loss": 1.0, "name": "Zoë"}
    table = tw_cli("show", str(run_dir))
    assert table.returncode == 0 and "run.start" in table.stdout


def test_prove_and_verify_proof_offline(run_dir: Path, tmp_path: Path) -> None:
    proof_path = tmp_path / "proof.json"
    assert tw_cli("prove", str(run_dir), "--seq", "2", "-o", str(proof_path)).returncode == 0
    proc = tw_cli("verify-proof", str(proof_path))
    assert proc.returncode == 0 and "record seq 2 (train.epoch)" in proc.stdout
    proof = json.loads(proof_path.read_text())
    proof["record"] = proof["record"].replace('"loss":0.5', '"loss":0.4')
    proof_path.write_text(json.dumps(proof))
    bad = tw_cli("verify-proof", str(proof_path))
    assert bad.returncode == 3 and "inclusion proof does not lead to the expected root" in bad.stderr


@pytest.mark.parametrize("args, message", [
    (["prove", "{run}", "--seq", "99"], "no record seq 99"),
    (["show", "{tmp}/missing"], "no such run folder"),
    (["verify-proof", "{tmp}/nope.json"], "no such proof file"),
    (["schema", "--kind", "no.such"], "unknown record kind"),
    (["erase", "{run}"], "name at least one --subject"),
])
def test_bad_input_is_one_line_and_non_zero(run_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    proc = tw_cli(*[a.format(run=run_dir, tmp=tmp_path) for a in args])
    assert proc.returncode != 0
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_schema_lists_every_builtin_kind() -> None:
    schemas = json.loads(tw_cli("schema").stdout)
    assert {"run.start", "run.end", "erasure", "ledger.recovered", "ledger.dropped"} <= set(schemas["kinds"])
    assert schemas["envelope"]["$ref"].endswith("Envelope")


def test_schema_knows_the_kinds_of_every_capability() -> None:
    from torchwitness.ledger.schema import _BUILTIN_KIND_MODULES

    schemas = json.loads(tw_cli("schema").stdout)["kinds"]
    assert {"finding", "fairness.eval", "edit.certificate", "drift.alert", "review.decision", "inference",
            "explain.attribution"} <= set(schemas)
    assert len(_BUILTIN_KIND_MODULES) == len(set(_BUILTIN_KIND_MODULES))


def test_every_module_that_registers_kinds_is_listed() -> None:
    from torchwitness.ledger.schema import _BUILTIN_KIND_MODULES

    src = Path(tw.__file__).parent
    registering = {
        "torchwitness." + ".".join(p.relative_to(src).with_suffix("").parts)
        for p in src.rglob("*.py") if "register_kind(" in p.read_text() and p.name != "schema.py"
    }
    assert registering <= set(_BUILTIN_KIND_MODULES), registering - set(_BUILTIN_KIND_MODULES)
