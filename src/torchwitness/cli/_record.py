"""How a command's record reached a run: appended here, or left for the process that holds the run open."""

from __future__ import annotations

from typing import Any

WHEN_QUEUED = "when it next looks at its inbox (every second) or when it closes"


def recorded(target: Any, seq: int | None) -> str:
    """The end of a "recorded ..." line for the record ``target.record`` gave ``seq``."""
    if not target.queued:
        return f"as seq {seq}"
    if seq is None:
        return f"queued: the process that holds the run open records it {WHEN_QUEUED}"
    return f"as seq {seq} by the process that holds the run open"
