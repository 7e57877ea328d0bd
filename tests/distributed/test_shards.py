"""torchrun --nproc_per_node=2 (gloo, CPU): per-rank shards under one signed run-level root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torchwitness.errors import VerificationError
from torchwitness.ledger import verify_run

SCRIPT = Path(__file__).with_name("ddp_run.py")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0",
           "--rdzv_backend=c10d", "--rdzv_endpoint=127.0.0.1:0", str(SCRIPT), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_healthy_ddp_run_verifies_with_one_run_root(ddp_run: Path) -> None:
    result = verify_run(ddp_run, deep=True)
    assert result.world_size == 2 and result.run_checkpoints == 2
    assert result.records == 2 * 22  # run.start + 20 steps + run.end per rank
    runs = {json.loads((ddp_run / f"rank-{r}" / "ledger.json").read_text())["run"] for r in (0, 1)}
    assert runs == {json.loads((ddp_run / "run.json").read_text())["run"]}
    proc = subprocess.run([sys.executable, "-m", "torchwitness", "verify", str(ddp_run)], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "in 2 rank shards" in proc.stdout


def test_tampered_shard_names_its_rank_and_seq(ddp_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(ddp_run, copy)
    seg = copy / "rank-1" / "records" / "000000.jsonl"
    lines = seg.read_bytes().split(b"\n")
    lines[7] = lines[7].replace(b'"step":6', b'"step":60')
    seg.write_bytes(b"\n".join(lines))
    with pytest.raises(VerificationError, match=r"^rank 1: record seq 7"):
        verify_run(copy)


def test_missing_shard_and_forged_run_checkpoint(ddp_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(ddp_run, copy)
    note = sorted((copy / "checkpoints").glob("*.note"))[-1]
    lines = note.read_text().split("\n")
    head = next(i for i, line in enumerate(lines) if line.startswith("torchwitness-head 1 "))
    fields = lines[head].split(" ")
    lines[head] = " ".join([*fields[:2], "3", *fields[3:]])  # rank 1's head now claims size 3
    note.write_text("\n".join(lines))
    with pytest.raises(VerificationError, match=f"run-level checkpoint {note.name}: checkpoint signature does not"):
        verify_run(copy)
    shutil.rmtree(copy / "rank-1")
    with pytest.raises(VerificationError, match="rank 1: shard rank-1 is missing"):
        verify_run(copy)
