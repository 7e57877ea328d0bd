"""Provenance for erasure: which training steps, epochs and checkpoints each subject's data influenced.

Per step the ledger gets a compact commitment to the batch's subject set: the RFC 9162 Merkle root over the
sorted keyed subject commitments. Membership (row -> commitment, step -> rows) lives in a side index in
``private/provenance/``, beside the personal-data store whose salts make those commitments linkable to a
person; erasing a subject's salt unlinks its membership for good; a query recomputes each reported step's root from
the side index and checks it against the signed record, so the side index cannot claim steps the ledger does
not back. The training loop only appends CPU row indices that the data loader already produced; hashing
happens once per epoch in :meth:`ProvenanceRecorder.end_epoch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from torchwitness.controls.consent import commitment_root
from torchwitness.ledger.layout import Layout
from torchwitness.ledger.schema import register_kind

if TYPE_CHECKING:
    from torchwitness.run import Run

_PREFIX = "hmac-sha256:"


class StepCommitments(msgspec.Struct):
    """One epoch's per-step subject-set roots (one record per epoch keeps the envelope overhead small)."""

    epoch: int
    steps: list[int]
    roots: list[str]
    rows: list[int]
    subjects: list[int]


class CheckpointSaved(msgspec.Struct):
    epoch: int
    name: str
    digest: str | None


register_kind("data.provenance", StepCommitments)
register_kind("provenance.checkpoint", CheckpointSaved)


def side_index(root: str | Path) -> Path:
    return Layout(Path(root)).personal.parent / "provenance"


def _digests(commitments: Sequence[str]) -> np.ndarray:
    return np.frombuffer(b"".join(bytes.fromhex(c[len(_PREFIX):]) for c in commitments), dtype="V32")


def _commitments(digests: np.ndarray) -> list[str]:
    return [_PREFIX + d.tobytes().hex() for d in digests]


class ProvenanceRecorder:
    """Record, per training step, which subjects the batch contained.

    Example::

        prov = ProvenanceRecorder(run, subjects)       # subjects[i] = the subject of dataset row i
        for epoch in ...:
            for x, y, rows in loader:                   # rows from ConsentedDataset
                ...; prov.record_batch(step, rows)      # CPU indices: no device sync
            prov.end_epoch(epoch)                       # hashes, records data.provenance, writes the side index
            torch.save(...); prov.checkpoint_saved(step, epoch=epoch, name="epoch-3.pt")
    """

    def __init__(self, run: Run, subjects: Sequence) -> None:
        self.run = run
        self.dir = side_index(run.path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._digests = _digests(run.ledger.personal.commit_many(list(subjects)))
        np.save(self.dir / "rows.npy", self._digests.view(np.uint8).reshape(-1, 32))
        self._steps: list[int] = []
        self._batches: list[np.ndarray] = []

    def record_batch(self, step: int, rows: Any) -> None:
        """Remember the dataset rows of one step (a CPU tensor or array; nothing is hashed here)."""
        self._steps.append(int(step))
        self._batches.append(np.asarray(rows, dtype=np.int64))

    def end_epoch(self, epoch: int) -> None:
        """Hash each step's subject set, record one ``data.provenance`` record, persist the membership."""
        if not self._steps:
            return
        roots, n_subjects = [], []
        for rows in self._batches:
            digests = np.unique(self._digests[rows])
            roots.append(commitment_root(_commitments(digests)))
            n_subjects.append(len(digests))
        self.run.record("data.provenance", {"epoch": epoch, "steps": self._steps, "roots": roots,
                                            "rows": [len(b) for b in self._batches], "subjects": n_subjects},
                        step=self._steps[-1])
        np.savez(self.dir / f"epoch-{epoch:06d}.npz", epoch=np.int64(epoch), steps=np.asarray(self._steps),
                 offsets=np.cumsum([0, *(len(b) for b in self._batches)]),
                 members=np.concatenate(self._batches).astype(np.int32))
        self._steps, self._batches = [], []

    def checkpoint_saved(self, step: int, *, epoch: int, name: str, digest: str | None = None) -> None:
        """Note a saved model checkpoint: it carries the influence of every step up to ``step``."""
        self.run.record("provenance.checkpoint", {"epoch": epoch, "name": name, "digest": digest}, step=step)
