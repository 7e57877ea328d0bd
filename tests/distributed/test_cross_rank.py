"""Cross-rank rules under torchrun --nproc_per_node=2 (gloo, CPU), each bug named with its ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchwitness.ledger import verify_run
from torchwitness.report.from_run import run_findings
from torchwitness.rules.catalogue import Severity
from torchwitness.rules.training.distributed import uneven_steps

SCRIPT = Path(__file__).with_name("ddp_scenarios.py")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp-scenarios")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv_backend=c10d",
           "--rdzv_endpoint=127.0.0.1:0", str(SCRIPT), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _by_rule(run: Path) -> dict[str, tuple[int, ...]]:
    return {f.rule_id: f.ranks for f in run_findings(run)}


def test_healthy_ddp_run_is_quiet_and_verifies(runs: Path) -> None:
    assert verify_run(runs / "healthy").world_size == 2
    loud = [f for f in run_findings(runs / "healthy") if f.severity >= Severity.WARN]
    assert loud == [], [(f.rule_id, f.message) for f in loud]


def test_sampler_not_distributed(runs: Path) -> None:
    assert _by_rule(runs / "sampler_not_distributed")["TW801"] == (0, 1)
    assert "TW801" not in _by_rule(runs / "healthy")


def test_buffer_divergence(runs: Path) -> None:
    found = _by_rule(runs / "buffer_divergence")
    assert found.get("TW803")
    assert "TW802" not in found  # parameters stay in sync: DDP still averages the gradients


def test_nan_on_one_rank(runs: Path) -> None:
    found = _by_rule(runs / "nan_one_rank")
    assert found["TW804"] == (1,)


def test_fsdp_sharded_statistics_and_a_quiet_audit(runs: Path) -> None:
    import json

    from torchwitness.ledger import iter_records

    for rank in (0, 1):
        stats = json.loads((runs / "fsdp" / f"stats-{rank}.json").read_text())
        for key in ("norm", "max_abs", "numel", "nonfinite"):
            assert stats["got"][key] == pytest.approx(stats["oracle"][key], rel=1e-12, abs=1e-12), key
        errors = list(iter_records(runs / "fsdp" / f"rank-{rank}", kinds={"watch.error"}))
        assert errors == [], errors
    assert [f.rule_id for f in run_findings(runs / "fsdp") if f.severity >= Severity.WARN] == []


def test_uneven_step_counts_name_the_odd_rank() -> None:
    [f] = uneven_steps({0: 100, 1: 100, 2: 97})
    assert f.rule_id == "TW806" and f.ranks == (2,)
    assert uneven_steps({0: 5, 1: 5}) == []
