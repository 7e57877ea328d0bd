"""certify, verify-cert, doctor, cert-schema."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import typer
from rich.table import Table

from torchwitness.cli._output import console, err_console
from torchwitness.errors import InputError

_BASELINE = typer.Option(..., "--baseline", help="HF model folder, .safetensors/.pt state dict (with --factory).")
_SUBJECT = typer.Option(None, "--subject", help="The edited model, in the same forms as --baseline.")
_FACTORY = typer.Option(None, "--factory", help="package.module:function building the model (for state dicts).")
_DATA = typer.Option(None, "--data", help="Evaluation data: a text file (tokenized by the model's tokenizer) "
                                          "or token ids as .npy.")
_POLICY = typer.Option("balanced", "--policy", help="balanced, strict, lenient, or a policy JSON file.")
_KEY_DIR = typer.Option(None, "--key-dir", help="Where the signing key lives.")


def _stream(data: Path | None, source):
    from torchwitness.certify.windows import load_stream

    if data is None:
        raise InputError("pass --data: the text (or .npy token ids) both models are evaluated on")
    return load_stream(data, getattr(source.tokenizer, "encode", None))


def _summary(result, name: str) -> Table:
    from torchwitness.ledger.encoding import decode_float as num  # NaN / Inf arrive tagged

    cert = result.certificate
    table = Table(title=f"{name}: [bold]{result.verdict.upper()}[/] (policy {cert['policy']['name']})")
    for col in ("metric", "estimate", "interval", "margin", "p (one-sided)", "gate"):
        table.add_column(col)
    for metric, m in cert["statistics"]["metrics"].items():
        if "estimate" not in m:
            table.add_row(metric, "", "", "", f"{m['p_value']:.3g}", "no")
            continue
        interval = "[{:.5g}, {:.5g}]".format(*map(num, m["interval"])) if "interval" in m else ""
        margin = f"{'≤' if m['side'] == 'upper' else '≥'} {m['margin']:g}" if "margin" in m else ""
        table.add_row(metric, f"{num(m['estimate']):.6g}", interval, margin,
                      f"{m['p_value']:.3g}" if "p_value" in m else "", "yes" if m.get("gate") else "no")
    return table


def certify(baseline: str = _BASELINE, subject: str | None = _SUBJECT,
            edit: list[str] | None = typer.Option(None, "--edit", help="quant-int8, quant-int4, quant-intB-gG, "
                                                  "prune-P; repeat to certify several edits of the baseline."),
            data: Path | None = _DATA, policy: str = _POLICY, factory: str | None = _FACTORY,
            run: Path = typer.Option(Path("certify-run"), "--run", help="Run folder for the ledger record."),
            out: Path | None = typer.Option(None, "--out", "-o", help="Also write the certificate(s) here "
                                            "(a file for one, a folder for several)."),
            apply: bool = typer.Option(False, "--apply", help="Edit the baseline in place; roll back on fail."),
            save: Path | None = typer.Option(None, "--save", help="With --apply: write the kept weights here."),
            windows: int | None = typer.Option(None, "--windows", help="Override the policy's window count."),
            window_length: int | None = typer.Option(None, "--window-length", help="Override the window length."),
            key_dir: Path | None = _KEY_DIR) -> None:
    """Certify a subject (or built-in edits of the baseline) against the baseline; exit 1 if any fails."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from torchwitness.certify.api import certify as run_certify
    from torchwitness.certify.certificate import to_bytes
    from torchwitness.certify.policy import load_policy
    from torchwitness.certify.sources import load_source
    from torchwitness.cli._record import open_run
    from torchwitness.ledger.encoding import decode_float as num

    edits = list(edit or [])
    if (subject is None) == (not edits):
        raise InputError("give exactly one of --subject or --edit")
    if apply and len(edits) != 1:
        raise InputError("--apply takes exactly one --edit")
    if save and not apply:
        raise InputError("--save needs --apply")
    pol = load_policy(policy)
    base = load_source(baseline, factory=factory)
    subj = load_source(subject, factory=factory) if subject else None
    stream = _stream(data, base)
    length = window_length or pol.window_length
    total = min(windows or pol.windows, len(stream) // (length + 1))
    failed = 0
    with open_run(run, config={"command": "certify", "policy": pol.name, "edits": edits}) as r:
        for e in edits or [None]:
            name = e or "subject"
            progress = Progress(TextColumn(f"certify {name}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=err_console)
            with progress:
                task = progress.add_task("windows", total=total)
                result = run_certify(base, subj if e is None else None, edit=e, tokens=stream, policy=pol, run=r,
                                     apply=apply, windows=windows, window_length=window_length,
                                     data_source=str(data), key_dir=key_dir,
                                     progress=lambda n, t=task, p=progress: p.advance(t, n))
            console.print(_summary(result, name))
            say = partial(console.print, highlight=False, soft_wrap=True, markup=False)
            for reason in result.reasons:
                say(f"  reason: {reason}")
            top = result.certificate["diagnostics"]["layers"][:3]
            say("  most changed layers: " + ", ".join(
                f"{d['layer']} (weight error {num(d['weight_error']):.3g})" for d in top))
            if out is not None:
                target = out / f"{name}.json" if len(edits) > 1 else out
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(to_bytes(result.certificate))
                say(f"  certificate: {target}")
            say(f"  ledger: {run} record seq {result.seq}, blob {result.digest}")
            if result.action == "rolled-back":
                say(f"  edit rolled back: weights restored to {result.certificate['baseline']['weights']}")
            elif result.action == "kept" and save is not None:
                _save(base.model, save)
                say(f"  edited weights saved to {save}")
            failed += not result.passed
    if failed:
        raise typer.Exit(1)


def _save(model, path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_model

        save_model(model, str(path))
    else:
        import torch

        torch.save(model.state_dict(), path)


def verify_cert(cert: Path = typer.Argument(..., help="A certificate JSON file."),
                key: str | None = typer.Option(None, "--key", help="Pin the signer's fingerprint (sha256:...)."),
                baseline: str | None = typer.Option(None, "--baseline", help="Check the baseline's digest."),
                subject: str | None = typer.Option(None, "--subject", help="Check the subject's digest."),
                factory: str | None = _FACTORY, data: Path | None = _DATA,
                replay: int = typer.Option(0, "--replay", help="Re-run K random windows on the models."),
                seed: int | None = typer.Option(None, "--seed", help="Seed choosing the replayed windows."),
                run: Path | None = typer.Option(None, "--run", help="Also check the run's ledger records it."),
                verbose: bool = typer.Option(False, "--verbose", help="Show expected/computed values on failure.")
                ) -> None:
    """Verify a certificate: Merkle root, statistics, verdict and signature; optionally digests and replay."""
    from torchwitness.certify.sources import load_source
    from torchwitness.certify.verify import verify_certificate

    base = load_source(baseline, factory=factory) if baseline else None
    if data is not None and base is None:
        raise InputError("--data is checked against the certificate with the baseline's tokenizer: pass --baseline")
    tokens = _stream(data, base) if data is not None else None
    result = verify_certificate(cert, key=key, baseline=base, subject=subject, factory=factory, tokens=tokens,
                                replay=replay, seed=seed, run=run)
    typer.echo(result.summary())


def doctor(baseline: str = _BASELINE, subject: str | None = _SUBJECT,
           edit: str | None = typer.Option(None, "--edit", help="The edit certify would apply."),
           data: Path | None = _DATA, policy: str = _POLICY, factory: str | None = _FACTORY,
           key_dir: Path | None = _KEY_DIR,
           as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON.")) -> None:
    """Preflight for certify: inputs, data, policy and key, each with a stable code; exit 1 on any error."""
    from torchwitness.certify.doctor import preflight

    checks = preflight(baseline, subject, edit=edit, data=data, policy=policy, factory=factory, key_dir=key_dir)
    if as_json:
        typer.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        table = Table(title="torchwitness doctor")
        for col in ("code", "level", "message"):
            table.add_column(col, overflow="fold")
        colours = {"ok": "green", "info": "cyan", "warning": "yellow", "error": "red"}
        for c in checks:
            table.add_row(c.code, f"[{colours[c.level]}]{c.level}[/]", c.message)
        console.print(table)
    if any(c.level == "error" for c in checks):
        raise typer.Exit(1)


def cert_schema() -> None:
    """Print the JSON Schema of edit certificates."""
    from torchwitness.certify.certificate import certificate_schema

    typer.echo(json.dumps(certificate_schema(), indent=2))


def register(app: typer.Typer) -> None:
    app.command()(certify)
    app.command("verify-cert")(verify_cert)
    app.command()(doctor)
    app.command("cert-schema")(cert_schema)
