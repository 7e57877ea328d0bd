"""Export a run as OpenTelemetry spans over OTLP/HTTP: one trace per run with child spans for each epoch,
audited step, finding and edit certificate, at the times the ledger recorded them.

Spans carry ``torchwitness.seq`` so a trace viewer links each span to a provable record. A private
``TracerProvider`` is used, so exporting never changes the application's global tracing set-up.

Example::

    from torchwitness.integrations.otel_export import export_otel
    export_otel("evidence/adult-run", endpoint="http://127.0.0.1:4318/v1/traces")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchwitness.errors import ExportError
from torchwitness.ledger.verify import verify_run
from torchwitness.report.evidence import Evidence, entries, get, mapping, number

# record kind -> span name; each kind's numeric fields become attributes.
CHILD_SPANS = {"metrics": "metrics", "eval": "evaluation", "train.audit": "audited step", "finding": "finding",
               "edit.certificate": "certificate", "fairness.eval": "fairness evaluation"}


def _attributes(record: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {"torchwitness.seq": record["seq"], "torchwitness.kind": record["kind"]}
    if isinstance(record.get("step"), int):
        attrs["torchwitness.step"] = record["step"]
    for k, v in entry.items():
        if isinstance(v, str):
            attrs[f"torchwitness.{k}"] = v[:256]
        elif isinstance(v, bool | int):
            attrs[f"torchwitness.{k}"] = v
        elif number(v) is not None:
            attrs[f"torchwitness.{k}"] = number(v)
    return attrs


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    """A record's data with its ``metrics`` (metrics and eval records) lifted to the top level."""
    data = dict(mapping(record.get("data")))
    return {**{k: v for k, v in data.items() if k != "metrics"}, **mapping(data.get("metrics"))}


def export_otel(run_dir: str | Path, *, endpoint: str, service_name: str = "torchwitness",
                timeout: float = 10.0) -> int:
    """Send the run's spans to the OTLP/HTTP ``endpoint`` (``.../v1/traces``); returns how many were sent."""
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError as e:
        raise ImportError("the OpenTelemetry exporter needs: pip install 'torchwitness[otel]'") from e

    ev = Evidence.load(run_dir)
    result = verify_run(run_dir)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name,
                                                        "torchwitness.run": ev.run_id}))
    # Spans are collected first and sent in one request, so a refused export is an error, not a log line.
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("torchwitness")
    start, end = ev.first("run.start"), ev.last("run.end")
    t0 = (start or ev.records[0])["ts"] * 1000
    t1 = (end or ev.records[-1])["ts"] * 1000
    root = tracer.start_span(f"run {ev.run_id}", start_time=t0, attributes={
        "torchwitness.run": ev.run_id, "torchwitness.root": "sha256:" + result.root.hex(),
        "torchwitness.signer": result.signer, "torchwitness.records": result.records})
    ctx = trace.set_span_in_context(root)
    previous = t0
    for r in ev.records:
        name = CHILD_SPANS.get(r["kind"])
        if name is None:
            continue
        ts = r["ts"] * 1000
        # Logged metrics span from the previous ones (an epoch, say); other records are instants. A batched
        # train.audit record gives one span per audited step, all at the one time the ledger knows for the batch.
        begin = previous if r["kind"] == "metrics" else ts
        for _, entry in entries(r) if r["kind"] == "train.audit" else [("", _flat(r))]:
            span = tracer.start_span(name if name != "finding" else f"finding {get(r, 'rule_id')}", context=ctx,
                                     start_time=begin, attributes=_attributes(r, entry))
            if (r["kind"] == "finding" and get(r, "severity") == "error") or get(r, "verdict") == "fail":
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(get(r, "message") or get(r, "verdict"))))
            span.end(end_time=ts)
        if r["kind"] == "metrics":
            previous = ts
    if end is not None and get(end, "status") not in (None, "ok"):
        root.set_status(trace.Status(trace.StatusCode.ERROR, str(get(end, "status"))))
    root.end(end_time=t1)
    spans = memory.get_finished_spans()
    provider.shutdown()
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=timeout)
    try:
        outcome = exporter.export(spans)
    finally:
        exporter.shutdown()
    if outcome != SpanExportResult.SUCCESS:
        raise ExportError(f"the OTLP endpoint {endpoint} did not accept the {len(spans)} spans")
    return len(spans)
