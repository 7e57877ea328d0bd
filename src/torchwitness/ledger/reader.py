"""Read records back (for ``show``, reports and exporters). Readers never write."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torchwitness.errors import VerificationError
from torchwitness.ledger.layout import Layout, read_manifest
from torchwitness.ledger.segments import read_segments


def iter_records(root: str | Path, *, kinds: set[str] | None = None) -> Iterator[dict[str, Any]]:
    """Yield the run's records in seq order, optionally only those of ``kinds``; a torn tail is skipped."""
    layout = Layout(Path(root))
    read_manifest(layout.root)
    needles = [f'"kind":"{k}"'.encode() for k in kinds] if kinds else None
    for seg in read_segments(layout):
        for number, line in enumerate(seg.lines, 1):
            if needles is not None and not any(n in line for n in needles):
                continue
            record = parse_record(line, f"{seg.path.relative_to(layout.root)} line {number}")
            if kinds is None or record["kind"] in kinds:
                yield record


# The envelope every reader relies on (the full schema check is verify --deep's).
_ENVELOPE = {"seq": int, "ts": int, "kind": str, "run": str}


def parse_record(line: bytes, where: str) -> dict[str, Any]:
    """One record line as a dict with its envelope; anything else is damage, named by ``where``."""
    try:
        record = json.loads(line)
    except RecursionError:
        raise VerificationError(f"{where} is nested too deeply to be a record: run 'torchwitness verify'") from None
    except ValueError as e:
        raise VerificationError(f"{where} is not a JSON record ({e}): run 'torchwitness verify'") from None
    if not isinstance(record, dict) or "data" not in record or "step" not in record or any(
            type(record.get(k)) is not t for k, t in _ENVELOPE.items()):
        raise VerificationError(f"{where} is not a record (no seq, ts, kind, run, step and data): run "
                                "'torchwitness verify'")
    return record
