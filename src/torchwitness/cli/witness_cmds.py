"""witness keygen|add-log|serve|submit|timestamp|verify-timestamp: run a C2SP tlog-witness, ask witnesses to
cosign a run, and RFC 3161 timestamps over its checkpoints."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer

from torchwitness.errors import InputError

witness_app = typer.Typer(help="Witnesses: third parties that cosign a run's checkpoints only while it stays "
                               "append-only (C2SP tlog-witness).", no_args_is_help=True)
StateOpt = typer.Option(..., "--state", help="The witness's state folder (its key, trusted logs, checkpoints).")


@witness_app.command()
def keygen(state: Path = StateOpt,
           name: str | None = typer.Option(None, "--name", help="The witness's key name, ideally a schema-less "
                                           "URL such as witness.example.org/w1 (default: derived from the key).")
           ) -> None:
    """Create the witness's key in STATE and print its verifier key (give it to the logs and verifiers)."""
    import secrets

    from torchwitness.witness.server import WitnessState

    key = WitnessState(state).keygen(name or f"torchwitness-witness/{secrets.token_hex(8)}")
    typer.echo(key.public.to_vkey())


@witness_app.command("add-log")
def add_log(vkey: str = typer.Argument(..., help="A run's verifier key (RUN/keys/signer.vkey, NAME+ID+KEY)."),
            state: Path = StateOpt,
            origin_prefix: str = typer.Option("", "--origin-prefix", help="Trust the key only for origins that "
                                              "start with this (default: every origin the key signs).")) -> None:
    """Trust a log key: checkpoints it signs are witnessed. Takes effect at the next request, no restart."""
    from torchwitness.witness.server import WitnessState

    key = WitnessState(state).add_log(vkey.strip(), origin_prefix)
    scope = f"origins starting with {origin_prefix!r}" if origin_prefix else "every origin it signs"
    typer.echo(f"trusting {key.name} ({key.fingerprint}) for {scope}")


@witness_app.command()
def serve(state: Path = StateOpt,
          host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
          port: int = typer.Option(8421, "--port", min=0, max=65535, help="Port to listen on (0: any free "
                                                                            "port).")) -> None:
    """Serve POST /add-checkpoint and GET /<sha256(origin)>/checkpoint until interrupted."""
    from torchwitness.witness.server import make_server

    server = make_server(state, host, port)
    bound_host, bound_port = server.server_address[:2]
    # One line on stdout with the URL to configure; tests and scripts read it to learn an ephemeral port.
    print(f"witness {server.RequestHandlerClass.service.key.public.name} listening on "  # type: ignore[attr-defined]
          f"http://{bound_host}:{bound_port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@witness_app.command()
def submit(run: Path = typer.Argument(..., help="The run folder (single or distributed)."),
           witness: list[str] = typer.Option(..., "--witness", help="'VKEY URL' of a witness; repeatable."),
           timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for each witness.")) -> None:
    """Ask witnesses to cosign the newest checkpoint of a closed run (of every rank), e.g. after a witness was
    unreachable while it ran. Exit 3 unless every witness cosigned every shard."""
    from torchwitness.witness.client import submit_run

    for line in submit_run(run, witness, timeout=timeout):
        typer.echo(line)


@witness_app.command()
def timestamp(run: Path = typer.Argument(..., help="The run folder (single or distributed)."),
              tsa: str = typer.Option(..., "--tsa", help="The RFC 3161 Time-Stamping Authority's URL."),
              timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for the TSA.")) -> None:
    """Have a Time-Stamping Authority (RFC 3161) sign the newest checkpoint of every rank; the token is kept
    beside the note as checkpoints/<size>.tsr."""
    from torchwitness.witness.timestamp import timestamp_run

    for line in timestamp_run(run, tsa, timeout=timeout):
        typer.echo(line)


@witness_app.command("verify-timestamp")
def verify_timestamp(run: Path = typer.Argument(..., help="The run folder (single or distributed)."),
                     root: Path = typer.Option(..., "--tsa-root", help="The TSA's root certificate (PEM).")
                     ) -> None:
    """Check that the newest checkpoint of every rank carries an RFC 3161 token that chains to the TSA root and
    covers that checkpoint (run 'torchwitness verify' for the records themselves)."""
    from torchwitness.witness.timestamp import verify_timestamps

    try:
        pem = root.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read the TSA root {root}: {e.strerror}") from None
    for line in verify_timestamps(run, pem):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.add_typer(witness_app, name="witness")
