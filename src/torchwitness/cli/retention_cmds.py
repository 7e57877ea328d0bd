"""retention: declare how long a run's logs are kept (EU AI Act Art. 19(1) for providers, 26(6) for deployers)."""

from __future__ import annotations

from pathlib import Path

import typer

from torchwitness.cli._record import recorded


def retention(run: Path = typer.Argument(..., help="The run folder.", show_default=False),
              days: int = typer.Option(..., "--days", help="How many days the run folder is kept (>= 184)."),
              role: str = typer.Option("provider", help="provider (Art. 19(1)) or deployer (Art. 26(6))."),
              storage: str | None = typer.Option(None, help="Where the kept copy lives."),
              basis: str | None = typer.Option(None, help="For fewer than 184 days: the law that provides so.")
              ) -> None:
    """Record how long this run's logs are kept, and by whom (a retention.policy record)."""
    from torchwitness.controls.retention import declare_retention
    from torchwitness.ledger.inbox import appending

    with appending(run) as target:
        seq = declare_retention(target, logs_days=days, role=role, storage=storage,  # type: ignore[arg-type]
                                basis=basis)
    typer.echo(f"recorded the {role}'s retention of {days} days {recorded(target, seq)}")


def register(app: typer.Typer) -> None:
    app.command()(retention)
