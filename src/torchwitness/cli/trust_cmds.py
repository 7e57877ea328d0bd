"""checkpoint, consistency: the state a verifier keeps, and the proofs that a run still extends it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from torchwitness.cli.ledger_cmds import kept_note
from torchwitness.errors import InputError

RunArg = typer.Argument(..., help="The run folder.", show_default=False)


def checkpoint(run: Path = RunArg,
               output: Path | None = typer.Option(None, "-o", "--output", help="Save the checkpoint here."),
               key: str | None = typer.Option(None, "--key", help="Pin the signer's fingerprint (sha256:...).")
               ) -> None:
    """Print (or save) the run's newest signed checkpoint. Keep it: 'verify --since FILE' later proves the run
    still extends it (no rollback, no fork)."""
    from torchwitness.ledger.consistency import newest_checkpoint

    text = newest_checkpoint(run, key=key)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text)
    except OSError as e:
        raise InputError(f"cannot write {output}: {e.strerror or e}") from None
    typer.echo(f"saved the checkpoint of size {text.splitlines()[1]} to {output}")


def consistency(run: Path = RunArg,
                old: str = typer.Option(..., "--from", help="A kept checkpoint file ('torchwitness checkpoint'), "
                                                            "or a tree size."),
                to: int | None = typer.Option(None, "--to", help="The newer tree size (default: the newest "
                                                                  "checkpoint).")) -> None:
    """Print an RFC 9162 consistency proof (JSON) from an older checkpoint to a newer one of the run."""
    from torchwitness.ledger.consistency import consistency_proof, run_consistency_proof
    from torchwitness.ledger.layout import RUN_MANIFEST

    kept: str | int = int(old) if old.isdigit() else kept_note(Path(old), "--from")
    if (run / RUN_MANIFEST).exists():
        if isinstance(kept, int) or to is not None:
            raise InputError("a distributed run needs --from FILE (a run-level checkpoint) and no --to")
        doc = run_consistency_proof(run, kept)
    else:
        doc = consistency_proof(run, kept, to)
    typer.echo(json.dumps(doc, indent=2))


def register(app: typer.Typer) -> None:
    app.command()(checkpoint)
    app.command()(consistency)
