"""The chain of signed checkpoints in ``RUN/checkpoints``: writing the next one, reading them, checking the chain.

Each note carries the size and root of the one before it (a ``torchwitness-prev`` extension line, see
:mod:`torchwitness.ledger.note`), starting from size 0 and the empty tree's root. Verification walks that chain,
so a deleted note in the middle breaks it; deleting the newest notes leaves records no checkpoint covers, which
verification refuses (see :mod:`torchwitness.ledger.verify`).
"""

from __future__ import annotations

import os
from pathlib import Path

from torchwitness.errors import LedgerError, VerificationError
from torchwitness.ledger.keys import SigningKey
from torchwitness.ledger.layout import Layout
from torchwitness.ledger.merkle import EMPTY_ROOT, MerkleTree
from torchwitness.ledger.note import Checkpoint, SignedCheckpoint, parse, prev_line


def read_note(path: Path) -> SignedCheckpoint:
    """Parse one note file; a failure names the file."""
    try:
        return parse(path.read_text())
    except VerificationError as e:
        raise VerificationError(f"{path.name}: {e.reason}", checkpoint=e.checkpoint) from None
    except (OSError, UnicodeDecodeError) as e:
        raise VerificationError(f"{path.name} is unreadable: {e}") from None


def latest(layout: Layout) -> SignedCheckpoint | None:
    """The newest checkpoint note of a run folder (unverified), or None before the first."""
    files = layout.checkpoint_files()
    return read_note(files[-1]) if files else None


def check_chain(checkpoints: list[SignedCheckpoint]) -> None:
    """Raise unless each checkpoint (in order) names the one before it, the first naming the empty tree."""
    size, root = 0, EMPTY_ROOT
    for signed in checkpoints:
        if signed.checkpoint.prev != (size, root):
            prev_size = signed.checkpoint.prev[0]
            raise VerificationError(f"the checkpoint before it covered {prev_size} records, but the newest "
                                    f"checkpoint before it in the folder covers {size}: a checkpoint note is "
                                    "missing or was replaced", checkpoint=signed.checkpoint.size)
        size, root = signed.checkpoint.size, signed.checkpoint.root


def remove_stale(layout: Layout) -> None:
    """Delete what a crash left half-written (``*.tmp`` notes and blobs); only the writer calls this, under its
    lock, so no other process is writing them."""
    for folder in (layout.checkpoints, layout.blobs):
        for path in folder.glob("*.tmp") if folder.is_dir() else []:
            path.unlink(missing_ok=True)


class CheckpointWriter:
    """Signs and atomically writes the next checkpoint, chained to the newest one already in the folder."""

    def __init__(self, layout: Layout, origin: str, key: SigningKey, leaves: list[bytes], *, sync: bool) -> None:
        self._layout, self._origin, self._key, self._sync = layout, origin, key, sync
        signed = latest(layout)
        self.size, self.root = 0, EMPTY_ROOT
        if signed is not None:
            self._check_newest(signed, leaves)
            self.size, self.root = signed.checkpoint.size, signed.checkpoint.root

    def _check_newest(self, signed: SignedCheckpoint, leaves: list[bytes]) -> None:
        """Refuse to append to a ledger whose newest checkpoint no longer matches its records or key."""
        size = signed.checkpoint.size
        name = self._layout.checkpoint(size).name
        if size > len(leaves):
            raise LedgerError(f"checkpoint {name} covers {size} records but only {len(leaves)} remain: the ledger "
                              "lost checkpointed records; run 'torchwitness verify'")
        if MerkleTree(leaves[:size]).root() != signed.checkpoint.root:
            raise LedgerError(f"records no longer match checkpoint {name}; run 'torchwitness verify'")
        try:
            signed.verify(self._key.public)
            signed.checkpoint.prev  # noqa: B018 - raises on a note of the old, unchained format
        except VerificationError as e:
            raise LedgerError(f"checkpoint {name}: {e}") from None

    def write(self, size: int, root: bytes) -> None:
        text = Checkpoint(self._origin, size, root, (prev_line(self.size, self.root),)).sign(self._key)
        path = self._layout.checkpoint(size)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(text)
            if self._sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        self.size, self.root = size, root
