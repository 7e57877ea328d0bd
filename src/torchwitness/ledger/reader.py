"""Read records back (for ``show``, reports and exporters). Readers never write."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torchwitness.ledger.layout import Layout, read_manifest
from torchwitness.ledger.segments import read_segments


def iter_records(root: str | Path, *, kinds: set[str] | None = None) -> Iterator[dict[str, Any]]:
    """Yield the run's records in seq order, optionally only those of ``kinds``; a torn tail is skipped."""
    layout = Layout(Path(root))
    read_manifest(layout.root)
    needles = [f'"kind":"{k}"'.encode() for k in kinds] if kinds else None
    for seg in read_segments(layout):
        for line in seg.lines:
            if needles is not None and not any(n in line for n in needles):
                continue
            record = json.loads(line)
            if kinds is None or record["kind"] in kinds:
                yield record
