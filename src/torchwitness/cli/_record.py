"""How a command's record reached a run: appended here, or left for the process that holds the run open."""

from __future__ import annotations

from typing import Any

import typer

WHEN_QUEUED = "when it next looks at its inbox (every second) or when it closes"


def recorded(target: Any, seq: int | None) -> str:
    """The end of a "recorded ..." line for the record ``target.record`` gave ``seq``."""
    if not target.queued:
        return f"as seq {seq}"
    if seq is None:
        return f"queued: the process that holds the run open records it {WHEN_QUEUED}"
    return f"as seq {seq} by the process that holds the run open"


def completed_erasures(target: Any) -> int:
    """Say which erasures a crash had interrupted and opening the run finished (they are on record now); returns
    how many."""
    for done in target.completed_erasures:
        what = "personal value(s)" if done.store == "personal" else "retained serving input(s)"
        how = f"recorded now, seq {done.seq}" if done.appended else "its record was already written"
        typer.echo(f"completed an interrupted erasure of {len(done.keys)} {what} ({how})")
    return len(target.completed_erasures)
