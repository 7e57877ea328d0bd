"""``ConsentedDataset``: serve only rows whose subject consented to the declared purpose, epoch by epoch.

The set of servable rows is fixed when an epoch begins, so a revocation takes effect at the next epoch, and
each epoch leaves a ``consent.access`` record (the access log). Items are the base dataset's item plus the
row index, which :class:`~torchwitness.controls.provenance.ProvenanceRecorder` turns into subject commitments.

Example::

    data = ConsentedDataset(TensorDataset(x, y), subjects=ids, registry=registry, purpose="training", run=run)
    for epoch in range(epochs):
        data.begin_epoch(epoch)
        for x, y, rows in DataLoader(data, batch_size=256, shuffle=True):
            ...
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from torch.utils.data import Dataset

from torchwitness.controls.consent import ConsentRegistry
from torchwitness.errors import InputError
from torchwitness.ledger.encoding import Personal
from torchwitness.ledger.schema import register_kind

if TYPE_CHECKING:
    from torchwitness.run import Run

_REASONS = ("no_consent", "revoked", "outside_window")


class ConsentAccess(msgspec.Struct):
    """What one epoch was allowed to read: counts, why rows were withheld, and a digest of the served rows."""

    epoch: int
    purpose: str
    at: float
    rows_served: int
    rows_withheld: int
    withheld: dict[str, int]
    served_digest: str
    newly_withheld: list[dict[str, str]]


register_kind("consent.access", ConsentAccess)


class ConsentedDataset(Dataset):
    """A map-style view of ``base`` restricted, per epoch, to rows with consent for ``purpose``.

    Using it before :meth:`begin_epoch` raises: without a consent check there is nothing it may serve.
    """

    def __init__(self, base: Dataset, *, subjects: Sequence, registry: ConsentRegistry, purpose: str,
                 run: Run | None = None) -> None:
        if len(subjects) != len(base):  # type: ignore[arg-type]
            raise InputError(f"{len(subjects)} subject ids for {len(base)} rows")  # type: ignore[arg-type]
        self.base, self.subjects, self.registry, self.purpose, self.run = base, subjects, registry, purpose, run
        self._rows: np.ndarray | None = None
        self._withheld_subjects: set = set()

    def begin_epoch(self, epoch: int, *, at: float | None = None) -> ConsentAccess:
        """Fix the rows this epoch may read and record the access log."""
        at = time.time() if at is None else float(at)
        status = self.registry.status(self.subjects, self.purpose, at=at)
        withheld_mask = status != 0
        now_withheld = {self.subjects[i] for i in np.flatnonzero(withheld_mask)}
        # the first epoch sets the baseline; later ones report who dropped out since the previous epoch
        newly = [] if self._rows is None else sorted(now_withheld - self._withheld_subjects, key=str)
        self._withheld_subjects = now_withheld
        self._rows = np.flatnonzero(status == 0)
        access = ConsentAccess(
            epoch=epoch, purpose=self.purpose, at=at, rows_served=len(self._rows),
            rows_withheld=int(withheld_mask.sum()),
            withheld={r: int((status == k + 1).sum()) for k, r in enumerate(_REASONS)},
            served_digest="sha256:" + hashlib.sha256(self._rows.astype("<i8").tobytes()).hexdigest(),
            newly_withheld=[])
        if self.run is not None:
            data = msgspec.to_builtins(access)
            data["newly_withheld"] = [Personal(s) for s in newly]
            self.run.record("consent.access", data)
        return access

    @property
    def rows(self) -> np.ndarray:
        """Indices into ``base`` served this epoch."""
        if self._rows is None:
            raise InputError("call begin_epoch() before reading: consent is checked per epoch")
        return self._rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Any:
        row = int(self.rows[i])
        item = self.base[row]
        return (*item, row) if isinstance(item, tuple) else (item, row)
