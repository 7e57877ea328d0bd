"""coverage, report, card, diff, export: read-only views of a run's ledger."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from torchwitness.cli._output import console, err_console, output_file, require_verified
from torchwitness.errors import InputError, VerificationError
from torchwitness.jsonfile import check_output

RunArg = typer.Argument(..., help="The run folder.", show_default=False)
DRAFT = typer.Option(False, "--draft", help="Render even if the ledger does not verify, marked NOT VERIFIED.")
KEY = typer.Option(None, "--key", help="The signer's fingerprint (sha256:...): pins who signed the run; without "
                   "it verification proves integrity, not authorship.")
_STYLE = {"evidence": "green", "partial": "yellow", "none": "red", "improved": "green", "regressed": "bold red",
          "unchanged": "dim", "added": "cyan", "removed": "magenta"}


def coverage(run: Path = RunArg,
             as_json: bool = typer.Option(False, "--json", help="Print the coverage as JSON."),
             key: str | None = KEY, draft: bool = DRAFT) -> None:
    """Which obligations (EU AI Act, GDPR) have evidence in a run, which are partial, which have none; exit 3 if
    the ledger does not verify (unless --draft)."""
    import json

    require_verified(run, key=key, draft=draft)
    from torchwitness.report.evidence import Evidence
    from torchwitness.report.obligations import coverage as cover

    rows = cover(Evidence.load(run))
    if as_json:
        typer.echo(json.dumps([{"obligation": c.obligation.id, "status": c.status, "records": list(c.seqs),
                                "needs": {n.need.label: list(n.seqs) for n in c.needs}} for c in rows], indent=2))
        return
    table = Table(title=f"obligations coverage — {run}")
    for col in ("obligation", "Annex IV", "status", "needs", "records"):
        table.add_column(col, overflow="fold")
    for c in rows:
        table.add_row(f"{c.obligation.framework} {c.obligation.article}", ", ".join(map(str, c.obligation.annex_iv)),
                      f"[{_STYLE[c.status]}]{c.status}[/]", c.needs_text(), c.seqs_text(10))
    console.print(table)


def report(run: Path = RunArg,
           fmt: str = typer.Option("html", "--format", "-f", help="html, pdf or md."),
           output: Path | None = typer.Option(None, "-o", "--output", help="Where to write (default RUN/dossier.FMT).",
                                               callback=output_file),
           proofs: int = typer.Option(24, "--proofs", min=0, help="Inclusion proofs embedded for in-browser checking."),
           key: str | None = KEY, draft: bool = DRAFT) -> None:
    """Write the Annex IV technical documentation of a run, every statement citing its records; exit 3 if the
    ledger does not verify (unless --draft)."""
    from torchwitness.report.build import build_document
    from torchwitness.report.render import write_report

    if fmt not in ("html", "pdf", "md"):
        raise InputError(f"unknown report format {fmt!r}; use html, pdf or md")
    out = output or run / f"dossier.{fmt}"
    with err_console.status("building the dossier"):
        doc = build_document(run, proofs=proofs, key=key)
        if not doc.verification["ok"] and not draft:
            raise VerificationError(f"{run}: {doc.verification['summary']}; no dossier written (--draft writes "
                                    "one marked NOT VERIFIED)")
        write_report(doc, out, fmt)  # type: ignore[arg-type]
    if not doc.verification["ok"]:
        err_console.print(f"[bold red]NOT VERIFIED[/]: {escape(str(doc.verification['summary']))}", highlight=False,
                          soft_wrap=True)
    typer.echo(str(out))


def card(run: Path = RunArg,
         output: Path | None = typer.Option(None, "-o", "--output", help="Write here (default: stdout).",
                                             callback=output_file),
         intended_use: str | None = typer.Option(None, "--intended-use", help="The provider's intended use (else "
                                                 "the one run.log_model recorded)."),
         license: str | None = typer.Option(None, "--license", help="SPDX licence id for the metadata (else the "
                                            "one run.log_model recorded)."),
         task: str = typer.Option("other", "--task", help="Task type of the evaluation results in the metadata, "
                                  "e.g. text-classification."),
         key: str | None = KEY, draft: bool = DRAFT) -> None:
    """Write a Hugging Face model card (YAML metadata + sections) generated from the run's ledger; exit 3 if the
    ledger does not verify (unless --draft)."""
    from torchwitness.report.card import build_card, validate_card

    text = build_card(run, intended_use=intended_use, license=license, task=task, draft=draft, key=key)
    validate_card(text)
    if output:
        output.write_text(text)
        typer.echo(str(output))
    else:
        typer.echo(text)


def diff(run_a: Path = typer.Argument(..., help="The baseline run."),
         run_b: Path = typer.Argument(..., help="The candidate run."),
         policy: Path | None = typer.Option(None, "--policy", help="JSON tolerances (see docs)."),
         fail_on_regression: bool = typer.Option(False, "--fail-on-regression", help="Exit 4 on any regression."),
         as_json: bool = typer.Option(False, "--json", help="Print rows as JSON."),
         key: str | None = KEY, draft: bool = DRAFT) -> None:
    """Compare two runs: metrics, fairness, epsilon, findings, drift, certificates; exit 3 if either ledger does
    not verify (unless --draft; --key pins both runs' signer)."""
    import json

    for run in (run_a, run_b):
        require_verified(run, key=key, draft=draft)
    from torchwitness.report.diff import compare, load_policy
    from torchwitness.report.model import fmt

    result = compare(run_a, run_b, load_policy(policy))
    if as_json:
        typer.echo(json.dumps([{**r.__dict__, "delta": r.delta} for r in result.rows], indent=2))
    else:
        table = Table(title=f"{run_a} → {run_b}")
        for col in ("quantity", "baseline", "candidate", "change", "better", "tolerance", "status"):
            table.add_column(col, overflow="fold")
        for r in result.rows:
            table.add_row(r.name, fmt(r.a), fmt(r.b), fmt(r.delta), r.better, fmt(r.tolerance),
                          f"[{_STYLE[r.status]}]{r.status}[/]")
        console.print(table)
        console.print(", ".join(f"{n} {s}" for s, n in sorted(result.counts().items())))
    if fail_on_regression and result.regressions:
        err_console.print(f"[bold red]{len(result.regressions)} regression(s)[/]")
        raise typer.Exit(4)


def export(run: Path = RunArg,
           to: str = typer.Option(..., "--to", help="mlflow, otel or rdf."),
           target: str | None = typer.Option(None, "--target", "-o", help="MLflow tracking URI, OTLP/HTTP traces "
                                             "endpoint, or the Turtle file to write (default RUN/evidence.ttl)."),
           experiment: str = typer.Option("torchwitness", "--experiment", help="MLflow experiment name.")) -> None:
    """Export a run's evidence to MLflow, an OpenTelemetry collector (OTLP/HTTP) or an RDF (Turtle) file."""
    if to == "mlflow":
        from torchwitness.integrations.mlflow_export import export_mlflow

        if not target:
            raise InputError("--to mlflow needs --target TRACKING_URI (e.g. http://127.0.0.1:5000)")
        typer.echo(f"mlflow run {export_mlflow(run, tracking_uri=target, experiment=experiment)}")
    elif to == "otel":
        from torchwitness.integrations.otel_export import export_otel

        endpoint = target or "http://127.0.0.1:4318/v1/traces"
        typer.echo(f"sent {export_otel(run, endpoint=endpoint)} spans to {endpoint}")
    elif to == "rdf":
        from torchwitness.integrations.rdf_export import run_graph

        out = check_output(Path(target) if target else run / "evidence.ttl", "Turtle file")
        run_graph(run).serialize(destination=str(out), format="turtle")
        typer.echo(str(out))
    else:
        raise InputError(f"unknown export target {to!r}; use mlflow, otel or rdf")


def register(app: typer.Typer) -> None:
    app.command()(coverage)
    app.command()(report)
    app.command()(card)
    app.command()(diff)
    app.command()(export)
