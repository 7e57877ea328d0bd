"""spans: OpenTelemetry export of agent traces."""

from __future__ import annotations

from pathlib import Path

import typer

from torchwitness.cli._output import output_file
from torchwitness.errors import ExportError, InputError, TorchWitnessError

RunArg = typer.Argument(..., help="The run folder.", show_default=False)


def spans(run: Path = RunArg,
          out: Path | None = typer.Option(None, "--out", "-o", help="Write OTLP/JSON to this file.",
                                          callback=output_file),
          endpoint: str | None = typer.Option(None, "--endpoint",
                                              help="Send over OTLP/HTTP, e.g. http://127.0.0.1:4318/v1/traces.")
          ) -> None:
    """Export the run's agent steps and generations as OpenTelemetry GenAI spans (a file, an endpoint, or stdout)."""
    from torchwitness.cli._output import require_verified
    from torchwitness.integrations import otel_genai

    require_verified(run)  # spans state what the run holds: of a run that does not verify, none
    if out is not None and endpoint is not None:
        raise InputError("give --out or --endpoint, not both")
    if endpoint is not None:
        import logging

        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        if not otel_genai.spans(run):
            raise InputError(f"{run} holds no agent steps or generations: there are no spans to send to {endpoint}")
        # The exporter logs each retry over several lines; the outcome is said once, below.
        logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter").setLevel(logging.CRITICAL)
        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=10)
        try:
            n = otel_genai.export_spans(run, exporter)
        except TorchWitnessError:
            raise ExportError(f"could not send the spans of {run} to {endpoint}: unreachable, or it refused "
                              "them") from None
        finally:
            exporter.shutdown()
        typer.echo(f"sent {n} spans to {endpoint}")
    elif out is not None:
        n = otel_genai.write_otlp_json(run, out)
        typer.echo(f"wrote {n} spans to {out}")
    else:
        import json

        typer.echo(json.dumps(otel_genai.otlp_json(run), indent=1))


def register(app: typer.Typer) -> None:
    app.command()(spans)
