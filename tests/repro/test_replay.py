from __future__ import annotations

import pytest
from typer.testing import CliRunner

import torchwitness as tw
from torchwitness.cli import app
from torchwitness.errors import InputError
from torchwitness.ledger import iter_records, verify_run
from torchwitness.probes.replay import record_replayable, replay_check

FACTORIES = "replay_factories"


@pytest.fixture(autouse=True)
def importable(monkeypatch, request):
    monkeypatch.syspath_prepend(str(request.path.parent))


def record(tmp_path, factory: str, steps: int = 5):
    with tw.Run(tmp_path / "run", seed=7) as run:
        assert record_replayable(run, f"{FACTORIES}:{factory}", steps=steps) == steps
    return tmp_path / "run"


def test_deterministic_cpu_run_replays_bit_for_bit(tmp_path):
    run_dir = record(tmp_path, "deterministic")
    steps = list(iter_records(run_dir, kinds={"repro.step"}))
    assert [r["step"] for r in steps] == [0, 1, 2, 3, 4]
    assert len({r["data"]["grad_digest"] for r in steps}) == 5  # training moved: every step differs
    result = replay_check(run_dir)
    assert result.ok and result.compared == 5 and result.first_mismatch is None


def test_the_audit_factory_forms_replay_too(tmp_path):
    run_dir = record(tmp_path, "audit_style", steps=8)  # 8 steps > 6 batches per epoch: the loader is re-iterated
    assert replay_check(run_dir).ok


def test_unseeded_dropout_fails_at_the_first_step_it_acts(tmp_path):
    run_dir = record(tmp_path, "unseeded_dropout")
    result = replay_check(run_dir)
    assert not result.ok and result.first_mismatch == 2 and result.compared == 3
    assert "loss" in result.mismatch and "differs at step 2" in result.summary()


def test_a_different_training_step_is_detected_from_step_zero(tmp_path):
    run_dir = record(tmp_path, "deterministic", steps=2)
    swapped = replay_check(run_dir, factory=f"{FACTORIES}:unseeded_from_start")
    assert swapped.first_mismatch == 0 and swapped.compared == 1
    assert replay_check(run_dir, steps=1).compared == 1


def test_cli_record_and_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(app, ["replay-record", "good", "--factory", f"{FACTORIES}:deterministic", "--steps", "4"])
    assert ok.exit_code == 0, ok.output
    checked = runner.invoke(app, ["replay-check", "good"])
    assert checked.exit_code == 0 and "4 steps bit-identical" in checked.stdout
    runner.invoke(app, ["replay-record", "bad", "--factory", f"{FACTORIES}:unseeded_dropout", "--steps", "4"])
    failed = runner.invoke(app, ["replay-check", "bad"])
    assert failed.exit_code == 1 and "differs at step 2" in failed.stdout
    (check,) = [r["data"] for r in iter_records(tmp_path / "bad", kinds={"repro.check"})]
    assert check["ok"] is False and check["first_mismatch"] == 2
    verify_run(tmp_path / "bad", deep=True)


def test_errors_are_input_errors(tmp_path):
    with tw.Run(tmp_path / "noseed") as run, pytest.raises(InputError, match="seed"):
        record_replayable(run, f"{FACTORIES}:deterministic", steps=1)
    with pytest.raises(InputError, match="no recorded replay"):
        replay_check(tmp_path / "noseed")
    with tw.Run(tmp_path / "x", seed=0) as run, pytest.raises(InputError, match=r"package\.module:function"):
        record_replayable(run, "nocolon", steps=1)
