"""incident list|add|report: serious incidents (EU AI Act Art. 73) and their reporting deadlines."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer
from rich.table import Table

from torchwitness.cli._output import console
from torchwitness.cli._record import recorded
from torchwitness.errors import InputError

incident_app = typer.Typer(help="Serious incidents and their reporting deadlines (EU AI Act Art. 73).",
                           no_args_is_help=True)
RunArg = typer.Argument(..., help="The run folder.", show_default=False)
WhenOpt = typer.Option(None, help="ISO 8601 time with its offset, e.g. 2026-11-20T09:30+01:00 (default: now).")


def _when(text: str | None, what: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"--{what} {text!r} is not an ISO 8601 time (e.g. 2026-11-20T09:30+01:00)") from None
    if when.tzinfo is None:
        raise InputError(f"--{what} needs its UTC offset (e.g. 2026-11-20T09:30+01:00): a bare time could be any hour")
    return when


@incident_app.command("list")
def list_incidents(run: Path = RunArg) -> None:
    """Serious incidents with their deadlines and reports; exit 1 if one was reported late or is past due."""
    from torchwitness.controls.incidents import run_incidents
    from torchwitness.ledger.layout import read_manifest

    read_manifest(run)
    now = dt.datetime.now(dt.timezone.utc)
    found = run_incidents(run)
    table = Table(title=f"{len(found)} serious incident(s) in {run}")
    for col in ("incident", "category", "deadline (UTC)", "reported (UTC)", "status", "records"):
        table.add_column(col)
    for i in found:
        status = i.status(now)
        table.add_row(i.incident, i.category, f"{i.deadline:%Y-%m-%d %H:%M}",
                      f"{i.reported:%Y-%m-%d %H:%M}" if i.reported else "",
                      f"[red]{status}[/]" if i.overdue(now) else status, ", ".join(map(str, i.seqs)))
    console.print(table)
    if any(i.overdue(now) for i in found):
        raise typer.Exit(1)


@incident_app.command()
def add(run: Path = RunArg, incident: str = typer.Option(..., "--id", help="Your reference for the incident."),
        category: str = typer.Option("serious", help="serious (15 days), widespread or critical_infrastructure "
                                                     "(2 days), death (10 days)."),
        aware: str | None = WhenOpt,
        description: str | None = typer.Option(None, help="Stored only as an erasable commitment.")) -> None:
    """Record a serious incident and the deadline for reporting it."""
    from torchwitness.cli._record import appending_to
    from torchwitness.controls.incidents import DEADLINE_DAYS, check_category, record_incident

    when = _when(aware, "aware")  # bad input is refused before the ledger is opened
    check_category(category)
    with appending_to(run) as target:
        seq = record_incident(target, incident, category=category, aware=when,  # type: ignore[arg-type]
                              description=description)
    typer.echo(f"recorded incident {incident} {recorded(target, seq)}: report it within "
               f"{DEADLINE_DAYS[category]} days")


@incident_app.command()
def report(run: Path = RunArg, incident: str = typer.Option(..., "--id", help="The incident's reference."),
           authority: str = typer.Option(..., help="The authority it was reported to."),
           at: str | None = WhenOpt) -> None:
    """Record that an incident was reported to an authority."""
    from torchwitness.cli._record import appending_to
    from torchwitness.controls.incidents import record_report

    when = _when(at, "at")
    with appending_to(run) as target:
        seq = record_report(target, incident, authority=authority, reported=when)
    typer.echo(f"recorded the report of {incident} {recorded(target, seq)}")


def register(app: typer.Typer) -> None:
    app.add_typer(incident_app, name="incident")
