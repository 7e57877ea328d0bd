"""verify, prove, verify-proof, show, erase, schema."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer
from rich.table import Table

from torchwitness.cli._output import console, output_file, require_verified
from torchwitness.cli._record import WHEN_QUEUED, completed_erasures
from torchwitness.errors import InputError

RunArg = typer.Argument(..., help="The run folder.", show_default=False)


def verify(run: Path = RunArg,
           key: str | None = typer.Option(None, "--key", help="Pin the signer's fingerprint (sha256:...)."),
           origin: str | None = typer.Option(None, "--origin", help="Pin the run's identity, the origin its "
                                             "checkpoints carry (printed by verify; e.g. torchwitness/RUNID): a "
                                             "copy re-signed as a new log is refused."),
           deep: bool = typer.Option(False, "--deep", help="Also re-canonicalise and schema-check every record."),
           since: Path | None = typer.Option(None, "--since", help="A checkpoint kept earlier ('torchwitness "
                                                "checkpoint RUN -o FILE') that the run must still extend."),
           allow_unsigned_tail: bool = typer.Option(
               False, "--allow-unsigned-tail", help="Live view of a run still being written: accept (and name) "
                                                    "records no checkpoint covers yet. Never for an ended run."),
           witness: list[str] | None = typer.Option(None, "--witness", help="A witness's verifier key whose "
                                                    "cosignature the newest checkpoint (of every rank) must carry; "
                                                    "'VKEY URL' also asks the witness for the newest checkpoint "
                                                    "it cosigned, which the run must extend. Repeatable."),
           quorum: int | None = typer.Option(None, "--quorum", help="How many --witness keys must have cosigned "
                                             "(default: all)."),
           verbose: bool = typer.Option(False, "--verbose", help="Show expected/computed values on failure.")
           ) -> None:
    """Verify a run's ledger: signatures, Merkle roots, every record. Exit 0 only if all of it holds.

    Without --key the key inside the folder is trusted: that proves integrity, not authorship."""
    from torchwitness.ledger.verify import verify_run
    from torchwitness.witness.check import WitnessPolicy

    policy = WitnessPolicy.parse(witness or [], quorum) if witness or quorum is not None else None
    since_text = kept_note(since, "--since") if since else None
    result = verify_run(run, key=key, deep=deep, since=since_text, allow_unsigned_tail=allow_unsigned_tail,
                        origin=origin)
    typer.echo(result.summary())
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    for line in policy.check(run) if policy else []:
        typer.echo(line)


def prove(run: Path = RunArg, seq: int = typer.Option(..., "--seq", help="The record to prove."),
          output: Path | None = typer.Option(None, "-o", "--output", help="Write the proof here.",
                                               callback=output_file)) -> None:
    """Print an inclusion proof for one record as JSON (checkable offline with verify-proof)."""
    from torchwitness.ledger.proof import prove as make_proof

    text = json.dumps(make_proof(run, seq), indent=2)
    if output:
        output.write_text(text + "\n")
    else:
        typer.echo(text)


def verify_proof(proof: Path = typer.Argument(..., help="A proof written by 'torchwitness prove'."),
                 key: str | None = typer.Option(None, "--key", help="Pin the signer's fingerprint.")) -> None:
    """Check an inclusion proof offline: record hash, audit path, checkpoint signature."""
    from torchwitness.ledger.proof import load_proof
    from torchwitness.ledger.proof import verify_proof as check

    typer.echo(check(load_proof(proof), key=key).summary())


def show(run: Path = RunArg,
         kind: list[str] | None = typer.Option(None, "--kind", "-k", help="Only records of this kind."),
         as_json: bool = typer.Option(False, "--json", help="Print records as JSON lines."),
         limit: int = typer.Option(0, "--limit", min=0, help="Show at most this many (the newest); 0 for all.")
         ) -> None:
    """List a run's records (also of a run that does not verify, for investigating it: then a NOT VERIFIED line
    goes to stderr)."""
    from torchwitness.ledger.reader import iter_records

    records = list(iter_records(run, kinds=set(kind) if kind else None))  # not a run at all: one line, no listing
    require_verified(run, draft=True)
    if limit:
        records = records[-limit:]
    if as_json:
        for r in records:
            typer.echo(json.dumps(r, ensure_ascii=False))
        return
    table = Table(title=f"{run} — {len(records)} records", show_lines=False)
    for col in ("seq", "time (UTC)", "kind", "step", "data"):
        table.add_column(col, overflow="fold")
    for r in records:
        when = dt.datetime.fromtimestamp(r["ts"] / 1e6, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        data = json.dumps(r["data"], ensure_ascii=False)
        table.add_row(str(r["seq"]), when, r["kind"], "" if r["step"] is None else str(r["step"]),
                      data if len(data) <= 160 else data[:157] + "...")
    console.print(table)


def erase(run: Path = RunArg,
          subject: list[str] | None = typer.Option(None, "--subject", help="A personal value to erase."),
          commitment: list[str] | None = typer.Option(None, "--commitment", help="Erase by commitment."),
          decision: list[str] | None = typer.Option(None, "--decision",
                                                    help="A served decision whose retained input to delete."),
          reason: str = typer.Option("data subject request (GDPR Art. 17)", "--reason"),
          key_dir: Path | None = typer.Option(None, "--key-dir", help="Where the run's private key lives.")
          ) -> None:
    """Crypto-shred personal payloads, or delete retained serving inputs, and record the erasure; the ledger still
    verifies afterwards."""
    from torchwitness.cli._record import appending_to

    if not subject and not commitment and not decision:
        raise InputError("name at least one --subject, --commitment or --decision to erase")
    with appending_to(run, key_dir=key_dir) as target:
        completed = completed_erasures(target)  # a retry of an interrupted erase finishes it on opening the run
        values = target.erase(values=list(subject or []), commitments=list(commitment or []), reason=reason) if (
            subject or commitment) else 0
        inputs = 0
        if decision:
            from torchwitness.probes.retained import erase_inputs

            # Retained inputs live in a file of their own: deleted here and now, whoever holds the ledger.
            inputs = len(erase_inputs(target, list(decision), reason=reason))
    if values is None:
        typer.echo(f"queued the erasure of the named personal values for the process that holds {run} open: it "
                   f"erases them {WHEN_QUEUED}")
    if values:
        typer.echo(f"erased {values} personal value(s) from {run}")
    if inputs:
        typer.echo(f"erased {inputs} retained serving input(s) from {run}")
    if values == 0 and not inputs and not completed:
        typer.echo("nothing to erase: no such personal value or retained input")
        raise typer.Exit(1)


def schema(kind: str | None = typer.Option(None, "--kind", help="Only this record kind.")) -> None:
    """Print the JSON Schemas of the record envelope and every known record kind."""
    from torchwitness.ledger.schema import json_schemas

    typer.echo(json.dumps(json_schemas(kind), indent=2))


def kept_note(path: Path, option: str) -> str:
    """The text of a checkpoint note the user kept; a file that is not one is named in the error."""
    from torchwitness.errors import VerificationError
    from torchwitness.ledger.note import parse

    try:
        text = path.read_text()
        parse(text)
    except FileNotFoundError:
        raise InputError(f"{option} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{option} {path} is unreadable: {e}") from None
    except VerificationError as e:
        raise VerificationError(f"{option} {path} is not a signed checkpoint: {e.reason}") from None
    return text


def register(app: typer.Typer) -> None:
    app.command()(verify)
    app.command()(prove)
    app.command("verify-proof")(verify_proof)
    app.command()(show)
    app.command()(erase)
    app.command()(schema)
