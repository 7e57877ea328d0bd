"""Recording into a run folder from the command line, for the functions that take a ``Run`` (``run.record``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any


@contextmanager
def recording(run: Path) -> Iterator[Any]:
    """A target whose ``record`` appends to ``run``'s ledger, as ``Run.record`` does; the ledger is closed (and a
    checkpoint signed) on exit. Fails with one line while another process holds the ledger."""
    from torchwitness.ledger.layout import read_manifest
    from torchwitness.ledger.writer import Ledger

    read_manifest(run)
    with Ledger.open(run) as ledger:
        yield SimpleNamespace(record=ledger.append)
