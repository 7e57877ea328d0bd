"""incidents: serious incidents (EU AI Act Art. 73) with their reporting deadlines; exit 1 if one is overdue."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer
from rich.table import Table

from torchwitness.cli._output import console

RunArg = typer.Argument(..., help="The run folder.", show_default=False)


def incidents(run: Path = RunArg) -> None:
    """Serious incidents with their deadlines and reports; exit 1 if one was reported late or is past due."""
    from torchwitness.controls.incidents import run_incidents
    from torchwitness.ledger.layout import read_manifest

    read_manifest(run)
    now = dt.datetime.now(dt.timezone.utc)
    found = run_incidents(run)
    table = Table(title=f"{len(found)} serious incident(s) in {run}")
    for col in ("incident", "category", "deadline (UTC)", "reported (UTC)", "status", "records"):
        table.add_column(col)
    overdue = 0
    for i in found:
        late = i.overdue(now)
        overdue += late
        status = ("late" if late else "on time") if i.reported else ("overdue" if late else "due")
        table.add_row(i.incident, i.category, f"{i.deadline:%Y-%m-%d %H:%M}",
                      f"{i.reported:%Y-%m-%d %H:%M}" if i.reported else "",
                      f"[red]{status}[/]" if late else status, ", ".join(map(str, i.seqs)))
    console.print(table)
    if overdue:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(incidents)
