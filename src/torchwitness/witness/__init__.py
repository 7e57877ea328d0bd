"""Witnesses (C2SP tlog-witness, tlog-cosignature): third parties that cosign a run's checkpoints only while
the run stays append-only, so a rolled-back or forked run folder cannot pass as the one they saw.

This module stays light: the ledger imports it whether or not witnesses are configured.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def write_atomically(path: Path, content: str | bytes) -> None:
    """Replace ``path`` with ``content`` so that a crash leaves the old or the new content, both on disk."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself must survive a power loss too
    finally:
        os.close(fd)


class _NoWitnesses:
    """What a ledger without witnesses holds in their place: every hook does nothing."""

    def submit(self, size: int) -> None: ...

    def closing(self) -> contextlib.nullcontext:
        return contextlib.nullcontext()


def cosigner_for(layout: Any, origin: str, witnesses: Iterable[Any],
                 record: Callable[[str, dict[str, Any]], Any]) -> Any:
    """The ledger's hook: a running :class:`~torchwitness.witness.client.Cosigner` when witnesses are named.
    ``record`` (the ledger's append) must already work: the cosigner may record a failure at once."""
    witnesses = tuple(witnesses)
    if not witnesses:
        return _NoWitnesses()
    from torchwitness.witness.client import Cosigner

    return Cosigner(layout, origin, witnesses, record=record)
