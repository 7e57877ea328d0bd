"""Many inclusion proofs from one read of the run, each checkable offline."""

from __future__ import annotations

from pathlib import Path

import pytest

import torchwitness as tw
from torchwitness.errors import InputError, ProofError
from torchwitness.ledger import Prover, prove, verify_proof


def test_prover_proves_many_records_against_the_newest_checkpoint(tmp_path: Path) -> None:
    with tw.Run(tmp_path / "run", checkpoint_every=100) as run:
        for i in range(450):
            run.record("train.step", {"loss": 1.0 / (i + 1)}, step=i)
    prover = Prover(tmp_path / "run")
    for seq in (0, 1, 99, 100, 255, 451):
        proof = prover.prove(seq)
        result = verify_proof(proof)
        assert result.seq == seq and result.tree_size == 452  # run.start + 450 steps + run.end
        assert proof == prove(tmp_path / "run", seq)
    with pytest.raises(InputError, match="no record seq 452"):
        prover.prove(452)
    forged = prover.prove(7)
    forged["path"] = forged["path"][::-1]
    with pytest.raises(ProofError):
        verify_proof(forged)
