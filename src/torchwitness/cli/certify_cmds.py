"""certify, verify-cert, doctor, cert-schema.

Exit codes mean one thing each: 0 every verdict passed (or the certificate verifies, or doctor found nothing
wrong), 1 a certificate's verdict is fail, 2 a usage or input error, 3 a certificate failed verification. No
traceback reaches the user: an unexpected exception becomes one line with code 2 (3 in ``verify-cert``, where
anything unproven is a failed verification).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import click
import typer
from rich.markup import escape
from rich.table import Table

from torchwitness.cli._output import console, err_console
from torchwitness.errors import CertificateError, InputError, TorchWitnessError

_BASELINE = typer.Option(..., "--baseline", help="HF model folder, .safetensors/.pt state dict (with --factory).")
_SUBJECT = typer.Option(None, "--subject", help="The edited model, in the same forms as --baseline.")
_FACTORY = typer.Option(None, "--factory", help="package.module:function building the model (for state dicts).")
_DATA = typer.Option(None, "--data", help="Evaluation data: a text file (tokenized by the model's tokenizer) "
                                          "or token ids as .npy.")
_POLICY = typer.Option("balanced", "--policy", help="balanced, strict, lenient, or a policy JSON file.")
_KEY_DIR = typer.Option(None, "--key-dir", help="Where the signing key lives.")


# transformers imports torchao whenever it is installed; torchao 0.18 then logs that its CUDA and cp310 kernels
# cannot load on this machine, and torch that torchao registers enums twice. Neither concerns a certify.
_THIRD_PARTY_NOISE = ("torchao", "torch.utils._pytree")


def _one_meaning(unexpected: type[TorchWitnessError]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Keep exit code 1 for a failed verdict: any other error leaves as ``unexpected`` (2 or 3), in one line."""

    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            for name in _THIRD_PARTY_NOISE:
                logging.getLogger(name).setLevel(logging.ERROR)
            try:
                return command(*args, **kwargs)
            except (typer.Exit, typer.Abort, click.exceptions.Exit, click.ClickException, click.Abort,
                    KeyboardInterrupt):
                raise
            except TorchWitnessError as e:
                if e.exit_code in (2, 3):
                    raise
                raise unexpected(str(e)) from None
            except Exception as e:
                detail = " ".join(str(e).split())[:300]
                raise unexpected(f"{type(e).__name__}: {detail}") from None
        return run
    return wrap


def _stream(data: Path | None, source):
    from torchwitness.certify.windows import load_stream

    if data is None:
        raise InputError("pass --data: the text (or .npy token ids) both models are evaluated on")
    return load_stream(data, getattr(source.tokenizer, "encode", None))


def _summary(result, name: str) -> Table:
    from torchwitness.ledger.encoding import decode_float as num  # NaN / Inf arrive tagged

    cert = result.certificate
    table = Table(title=f"{escape(name)}: [bold]{result.verdict.upper()}[/] (policy {escape(cert['policy']['name'])})")
    table.caption = (f"{cert['statistics']['totals']['windows']} windows, torch threads "
                     f"{cert['environment'].get('torch_threads', '?')}, {result.timings.get('total_s', 0):.1f} s")
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


def _name_of(spec: str) -> str:
    """What to call a model on screen and in file names: its file's stem or its folder's name."""
    path = Path(spec)
    return (path.name if path.is_dir() else path.stem) or "subject"


def _targets(out: str | None, names: list[str]) -> dict[str, Path]:
    """Where each certificate goes: ``-o`` is a folder (created) when it ends in ``/``, already is one, or several
    certificates are written; otherwise the file for the one certificate."""
    if out is None:
        return {}
    folder = out.endswith(("/", "\\")) or Path(out).is_dir() or len(names) > 1
    base = Path(out)
    if not folder and base.suffix == "":
        base = base.with_suffix(".json")
    try:
        (base if folder else base.parent).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"-o {out}: cannot create the folder: {e.strerror or e}") from None
    targets = {n: base / f"{n}.json" for n in names} if folder else {names[0]: base}
    for path in targets.values():
        _replaceable(path)
    return targets


def _replaceable(path: Path) -> None:
    """A certificate may replace an earlier certificate, never another file (a script, a config) by mistake."""
    from torchwitness.certify.certificate import FORMAT
    from torchwitness.jsonfile import read_json

    if not path.exists():
        return
    try:
        ok = read_json(path, "file").get("format") == FORMAT
    except TorchWitnessError:
        ok = False
    if not ok:
        raise InputError(f"-o {path}: the file exists and is not a certificate: name another file or remove it")


@_one_meaning(InputError)
def certify(baseline: str = _BASELINE, subject: str | None = _SUBJECT,
            edit: list[str] | None = typer.Option(None, "--edit", help="quant-int8, quant-int4, quant-intB-gG, "
                                                  "prune-P, torchao-int8, torchao-int4, prune-l1-P, lora:ADAPTER; "
                                                  "repeat to certify several edits of the baseline."),
            data: Path | None = _DATA, policy: str = _POLICY, factory: str | None = _FACTORY,
            run: Path = typer.Option(Path("certify-run"), "--run", help="Run folder for the ledger record."),
            out: str | None = typer.Option(None, "--out", "-o", help="Also write the certificate(s) here: a file, "
                                           "or a folder (created; a trailing / or several certificates make it "
                                           "one) holding NAME.json each."),
            apply: bool = typer.Option(False, "--apply", help="Edit the baseline in place; roll back on fail."),
            save: Path | None = typer.Option(None, "--save", help="With --apply: write the kept weights here."),
            windows: int | None = typer.Option(None, "--windows", help="Override the policy's window count."),
            window_length: int | None = typer.Option(None, "--window-length", help="Override the window length."),
            threads: int | None = typer.Option(None, "--threads", help="torch threads (default: the free cores)."),
            key_dir: Path | None = _KEY_DIR) -> None:
    """Certify a subject (or edits of the baseline) against the baseline. Exit 0 all pass, 1 any fails, 2 bad input."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from torchwitness.certify.api import certify as run_certify
    from torchwitness.certify.api import check_counts, check_ids
    from torchwitness.certify.certificate import to_bytes
    from torchwitness.certify.editspec import Edit
    from torchwitness.certify.policy import load_policy
    from torchwitness.certify.sources import lean_transformers_import, load_source
    from torchwitness.certify.windows import window_count
    from torchwitness.cli._record import open_run
    from torchwitness.ledger.encoding import decode_float as num

    check_counts(windows=windows, window_length=window_length, threads=threads)
    edits = list(edit or [])
    if (subject is None) == (not edits):
        raise InputError("give exactly one of --subject or --edit")
    if apply and len(edits) != 1:
        raise InputError("--apply takes exactly one --edit")
    if save and not apply:
        raise InputError("--save needs --apply")
    for e in edits:
        Edit.parse(e)  # an unknown edit is refused before any model is loaded
    pol = load_policy(policy)
    names = [Edit.parse(e).name for e in edits] if edits else [_name_of(subject)]
    targets = _targets(out, names)
    keep = ("torchao",) if any(e.startswith("torchao") for e in edits) else ()
    with lean_transformers_import([baseline, subject], keep):
        base = load_source(baseline, factory=factory)
        subj = load_source(subject, factory=factory) if subject else None
    stream = _stream(data, base)
    check_ids(stream, base.model, str(data))
    length = window_length or pol.window_length
    total = window_count(len(stream), length, windows or pol.windows)
    if total < (windows or pol.windows):
        err_console.print(f"note: the data holds {total} windows of {length} tokens (plus one target each); "
                          f"certifying those {total}, not the {windows or pol.windows} asked for",
                          markup=False, highlight=False, soft_wrap=True)
    failed = 0
    say = partial(console.print, highlight=False, soft_wrap=True, markup=False)
    with open_run(run, config={"command": "certify", "policy": pol.name, "edits": edits}, key_dir=key_dir) as r:
        for e, name in zip(edits or [None], names, strict=True):
            progress = Progress(TextColumn(f"certify {escape(name)}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err_console)
            with progress:
                task = progress.add_task("windows", total=total)
                result = run_certify(base, subj if e is None else None, edit=e, tokens=stream, policy=pol, run=r,
                                     apply=apply, windows=windows, window_length=window_length,
                                     data_source=str(data), key_dir=key_dir, threads=threads,
                                     progress=lambda n, t=task, p=progress: p.advance(t, n))
            console.print(_summary(result, name))
            for reason in result.reasons:
                say(f"  reason: {reason}")
            changed = [d for d in result.certificate["diagnostics"]["layers"] if num(d["weight_error"]) != 0][:3]
            say("  most changed layers: " + (", ".join(
                f"{d['layer']} (weight error {num(d['weight_error']):.3g})" for d in changed) or
                "none: every weight matrix equals the baseline's"))
            if name in targets:
                try:
                    targets[name].write_bytes(to_bytes(result.certificate))
                except OSError as err:
                    raise InputError(f"-o {targets[name]}: cannot write the certificate: {err.strerror or err}") \
                        from None
                say(f"  certificate: {targets[name]}")
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


@_one_meaning(CertificateError)
def verify_cert(cert: Path = typer.Argument(..., help="A certificate JSON file."),
                key: str | None = typer.Option(None, "--key", help="Pin the signer's fingerprint (sha256:...)."),
                baseline: str | None = typer.Option(None, "--baseline", help="Check the baseline's digest."),
                subject: str | None = typer.Option(None, "--subject", help="Check the subject's digest."),
                factory: str | None = _FACTORY, data: Path | None = _DATA,
                replay: int = typer.Option(0, "--replay", help="Re-run K random windows on the models."),
                seed: int | None = typer.Option(None, "--seed", help="Seed choosing the replayed windows."),
                run: Path | None = typer.Option(None, "--run", help="Also check the run's ledger records it."),
                policy: str | None = typer.Option(None, "--policy", help="Require this policy (balanced, strict, "
                                                  "lenient, or a policy JSON file): any other fails."),
                verbose: bool = typer.Option(False, "--verbose", help="Show expected/computed values on failure.")
                ) -> None:
    """Verify a certificate: Merkle root, statistics, verdict and signature. Exit 0 verifies with verdict pass,
    1 verifies with verdict fail, 3 does not verify, 2 bad input."""
    from torchwitness.certify.policy import load_policy
    from torchwitness.certify.sources import lean_transformers_import, load_source
    from torchwitness.certify.verify import verify_certificate
    from torchwitness.ledger.verify import normalise_fingerprint

    if key is not None:  # a malformed pin fails before any model is loaded
        key = normalise_fingerprint(key)
    if replay < 0 or (seed is not None and seed < 0):
        raise InputError("--replay and --seed must be >= 0")
    required = load_policy(policy) if policy is not None else None
    with lean_transformers_import([baseline, subject]):
        base = load_source(baseline, factory=factory) if baseline else None
    if data is not None and base is None:
        raise InputError("--data is checked against the certificate with the baseline's tokenizer: pass --baseline")
    tokens = _stream(data, base) if data is not None else None
    result = verify_certificate(cert, key=key, baseline=base, subject=subject, factory=factory, tokens=tokens,
                                replay=replay, seed=seed, run=run, policy=required)
    typer.echo(result.summary())
    if result.verdict != "pass":  # verified, and what it proves is a failed edit: a CI gate must stop here
        raise typer.Exit(1)


@_one_meaning(InputError)
def doctor(baseline: str = _BASELINE, subject: str | None = _SUBJECT,
           edit: str | None = typer.Option(None, "--edit", help="The edit certify would apply."),
           data: Path | None = _DATA, policy: str = _POLICY, factory: str | None = _FACTORY,
           key_dir: Path | None = _KEY_DIR,
           as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON.")) -> None:
    """Preflight for certify: inputs, data, policy and key, each with a stable code; exit 2 on any error."""
    from torchwitness.certify.doctor import preflight
    from torchwitness.certify.sources import lean_transformers_import

    keep = ("torchao",) if edit and edit.startswith("torchao") else ()
    with lean_transformers_import([baseline, subject], keep):
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
        raise typer.Exit(2)


def cert_schema() -> None:
    """Print the JSON Schema of edit certificates."""
    from torchwitness.certify.certificate import certificate_schema

    typer.echo(json.dumps(certificate_schema(), indent=2))


def register(app: typer.Typer) -> None:
    app.command()(certify)
    app.command("verify-cert")(verify_cert)
    app.command()(doctor)
    app.command("cert-schema")(cert_schema)
