from __future__ import annotations

import sys

import pytest
import torch

import torchwitness as tw
from torchwitness.ledger import iter_records, verify_run


def test_run_records_start_and_end(tmp_path):
    with tw.Run(tmp_path / "run", config={"lr": 0.1}, seed=3) as run:
        seq = run.record("train.epoch", {"loss": torch.tensor(0.5)}, step=1)
    assert seq == 1
    records = list(iter_records(tmp_path / "run"))
    assert [r["kind"] for r in records] == ["run.start", "train.epoch", "run.end"]
    start = records[0]["data"]
    assert start["torch"] == torch.__version__
    assert start["seeds"]["user"] == 3
    assert start["config"] == {"lr": 0.1} and start["config_digest"].startswith("sha256:")
    assert records[1]["data"] == {"loss": 0.5} and records[1]["step"] == 1
    assert records[2]["data"]["status"] == "ok"
    assert verify_run(tmp_path / "run", deep=True).records == 3


def test_run_end_records_the_exception(tmp_path):
    with pytest.raises(ValueError, match="boom"), tw.Run(tmp_path / "run"):
        raise ValueError("boom")
    end = list(iter_records(tmp_path / "run", kinds={"run.end"}))[-1]["data"]
    assert end["status"] == "error"
    assert end["error"]["type"] == "ValueError" and end["error"]["message"] == "boom"
    verify_run(tmp_path / "run")


def test_verifier_does_not_import_torch(tmp_path):
    import subprocess

    with tw.Run(tmp_path / "run") as run:
        run.record("x", {"a": 1})
    code = ("import sys, torchwitness.ledger.verify as v; v.verify_run(sys.argv[1]); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], check=True)
