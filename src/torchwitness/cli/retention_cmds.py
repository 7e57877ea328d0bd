"""retention, expire: declare how long a run's logs are kept (EU AI Act Art. 19(1) for providers, 26(6) for
deployers), and delete what has outlived its retention period (GDPR Art. 5(1)(e))."""

from __future__ import annotations

from pathlib import Path

import typer

from torchwitness.cli._record import completed_erasures, recorded


def retention(run: Path = typer.Argument(..., help="The run folder.", show_default=False),
              days: int = typer.Option(..., "--days", help="How many days the run folder is kept (at least 184, "
                                                           "unless --basis names a law)."),
              role: str = typer.Option("provider", help="provider (Art. 19(1)) or deployer (Art. 26(6))."),
              storage: str | None = typer.Option(None, help="Where the kept copy lives."),
              basis: str | None = typer.Option(None, help="For fewer than 184 days: the law that provides so.")
              ) -> None:
    """Record how long this run's logs are kept, and by whom (a retention.policy record)."""
    from torchwitness.cli._record import appending_to
    from torchwitness.controls.retention import declare_retention

    with appending_to(run) as target:
        completed_erasures(target)
        seq = declare_retention(target, logs_days=days, role=role, storage=storage,  # type: ignore[arg-type]
                                basis=basis)
    typer.echo(f"recorded the {role}'s retention of {days} days {recorded(target, seq)}")


def expire(run: Path = typer.Argument(..., help="The run folder.", show_default=False),
           key_dir: Path | None = typer.Option(None, "--key-dir", help="Where the run's private key lives.")) -> None:
    """Crypto-shred conversation content, and delete retained serving inputs, whose retention period has elapsed."""
    from torchwitness.cli._record import appending_to
    from torchwitness.controls.content import expire as expire_content
    from torchwitness.probes.retained import expire_inputs

    # A scheduled job beside the application that holds the run open: the holder erases, within a second or so.
    with appending_to(run, key_dir=key_dir, timeout=30.0) as target:
        completed_erasures(target)
        n = expire_content(target)
        inputs = expire_inputs(target)  # their own file: deleted here, recorded by the holder
    typer.echo(f"erased {n} expired content value(s) from {run}"
               + (" (by the process that holds it open)" if target.queued and n else ""))
    if inputs:
        typer.echo(f"deleted {inputs} retained serving input(s) past their retention period")


def register(app: typer.Typer) -> None:
    app.command()(retention)
    app.command()(expire)
