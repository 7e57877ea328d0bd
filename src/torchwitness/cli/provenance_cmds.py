"""``torchwitness provenance RUN --subject ID [--erase]``: what a subject influenced, and the erasure flow."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import typer


def _ranges(steps: list[int]) -> str:
    out, start, prev = [], None, None
    for s in steps:
        if start is None:
            start = prev = s
        elif s == prev + 1:
            prev = s
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = s
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(out)


def provenance(run: Path = typer.Argument(..., help="The run folder."),
               subject: str = typer.Option(..., "--subject", help="The data subject's id."),
               erase: bool = typer.Option(False, "--erase", help="Revoke consent, drop membership, crypto-shred, "
                                          "and record the affected checkpoints."),
               as_json: bool = typer.Option(False, "--json", help="Print JSON."),
               key_dir: Path | None = typer.Option(None, "--key-dir", help="Where the run's private key lives.")
               ) -> None:
    """Which steps, epochs and saved checkpoints a subject's data influenced (checked against the ledger)."""
    from torchwitness.controls.provenance_query import erase_subject, query

    if erase:
        report = erase_subject(run, subject, key_dir=key_dir)
        if as_json:
            typer.echo(json.dumps(msgspec.to_builtins(report), indent=2))
            return
        typer.echo(f"revoked consent for: {', '.join(report.purposes_revoked) or '(no consent on record)'}")
        typer.echo(f"erased subject {report.commitment} from {run}: {report.steps} steps in epochs "
                   f"{report.epochs} no longer linkable")
        typer.echo(f"checkpoints carrying its influence: {', '.join(report.affected_checkpoints) or 'none'}")
        return
    answer = query(run, subject)
    if as_json:
        typer.echo(json.dumps(msgspec.to_builtins(answer), indent=2))
        return
    typer.echo(f"subject {answer.commitment}: {answer.rows} row(s)")
    typer.echo(f"steps ({len(answer.steps)}, {answer.verified_steps} checked against the ledger): "
               f"{_ranges(answer.steps) or 'none'}")
    typer.echo(f"epochs: {', '.join(map(str, answer.epochs)) or 'none'}")
    typer.echo(f"checkpoints: {', '.join(answer.checkpoints) or 'none'}")


def register(app: typer.Typer) -> None:
    app.command()(provenance)
