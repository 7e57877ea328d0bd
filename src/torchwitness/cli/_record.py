"""How a command's record reached a run: appended here, or left for the process that holds the run open."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
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


def _announce(run: Path, run_id: str, what: str) -> None:
    from torchwitness.cli._output import err_console

    err_console.print(f"appended {what} to the existing run {run_id} in {run}", highlight=False, soft_wrap=True,
                      markup=False)


@contextmanager
def appending_to(run: Path, **options: Any) -> Iterator[Any]:
    """:func:`~torchwitness.ledger.inbox.appending` for commands: the run must exist; once the command's records
    are in, it says (on stderr) that they went to that existing run."""
    from torchwitness.ledger.inbox import appending
    from torchwitness.ledger.layout import existing_run

    with appending(run, **options) as target:
        yield target
    _announce(run, existing_run(Path(run)) or "?", "records")


@contextmanager
def open_run(run: Path, **options: Any) -> Iterator[Any]:
    """A :class:`~torchwitness.Run` for a command's ``--run``: a new run, or a new session of the run ``run``
    already holds (said on stderr once it is closed)."""
    from torchwitness.ledger.layout import existing_run
    from torchwitness.run import Run

    found = existing_run(Path(run))
    with Run(run, resume=True, **options) as r:
        yield r
    if found is not None:
        _announce(run, found, "a session")
