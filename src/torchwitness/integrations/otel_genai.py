"""Export a run's agent steps and generations as OpenTelemetry spans following the GenAI semantic conventions.

The spans are a *view of the ledger*: they are built from ``agent.step`` and ``llm.generation`` records, carry
the same trace and span ids, and so can be joined with the signed records. An ``llm.generation`` made outside
any agent step becomes a ``chat`` span of its own. Content appears only as commitments
(``torchwitness.input.commitment`` ...), never as text; our token statistics are ``torchwitness.llm.*``.

Needs ``pip install 'torchwitness[otel]'``.

Example::

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    export_spans("runs/agent", OTLPSpanExporter(endpoint="http://127.0.0.1:4318/v1/traces"))
    write_otlp_json("runs/agent", "spans.json")     # OTLP/JSON file, as an OTLP file exporter writes
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from torchwitness.errors import InputError, TorchWitnessError
from torchwitness.ledger.encoding import decode_float
from torchwitness.ledger.reader import iter_records
from torchwitness.probes.agent import GenerationTally

_CONTENT_FIELDS = ("input", "output", "error", "prompt", "completion")


def _otel() -> Any:
    try:
        from opentelemetry import trace
        from opentelemetry.sdk import trace as sdk_trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    except ImportError as e:
        raise InputError("OpenTelemetry export needs the otel extra: pip install 'torchwitness[otel]'") from e
    return trace, sdk_trace, Resource, InstrumentationScope


def _attr(value: Any) -> Any:
    """Record values back to OpenTelemetry attribute values (tagged floats decoded)."""
    if isinstance(value, dict) and "$float" in value:
        return decode_float(value)
    if isinstance(value, list):
        return [_attr(v) for v in value]
    return value


def _commitments(data: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name in _CONTENT_FIELDS:
        value = data.get(name)
        if isinstance(value, dict) and "$personal" in value:
            out[f"torchwitness.{name}.commitment"] = value["$personal"]
        if counts := data.get(f"{name}_redactions"):
            out[f"torchwitness.{name}.redactions"] = sum(counts.values())
    return out


def spans(run_dir: str | Path) -> list[Any]:
    """The run's agent steps and stand-alone generations as ``opentelemetry.sdk.trace.ReadableSpan`` objects."""
    trace, sdk_trace, Resource, InstrumentationScope = _otel()
    records = list(iter_records(run_dir, kinds={"agent.step", "llm.generation", "run.start"}))
    run_id = records[0]["run"] if records else ""
    resource = Resource.create({"service.name": "torchwitness", "torchwitness.run.id": run_id})
    from torchwitness import __version__

    scope = InstrumentationScope("torchwitness", __version__)

    def context(trace_id: str, span_id: str) -> Any:
        return trace.SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False,
                                 trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))

    steps = [r for r in records if r["kind"] == "agent.step"]
    step_ids = {r["data"]["span_id"] for r in steps}
    out = []
    for r in steps:
        d = r["data"]
        attrs = {k: _attr(v) for k, v in d["attributes"].items()}
        attrs.update(_commitments(d), **{"torchwitness.ledger.seq": r["seq"]})
        status = (trace.Status(trace.StatusCode.ERROR, d["error_type"]) if d["status"] == "error"
                  else trace.Status(trace.StatusCode.OK))
        parent = context(d["trace_id"], d["parent_span_id"]) if d["parent_span_id"] else None
        out.append(sdk_trace.ReadableSpan(
            d["span_name"], context=context(d["trace_id"], d["span_id"]), parent=parent, resource=resource,
            attributes=attrs, kind=trace.SpanKind.CLIENT if d["span_kind"] == "client" else trace.SpanKind.INTERNAL,
            status=status, start_time=d["start_us"] * 1000, end_time=d["end_us"] * 1000,
            instrumentation_scope=scope))
    for r in records:
        d = r["data"]
        if r["kind"] != "llm.generation" or d["span_id"] in step_ids:
            continue
        tally = GenerationTally()
        tally.add(d)
        attrs = {**tally.attributes(), **_commitments(d), "torchwitness.ledger.seq": r["seq"]}
        end_ns = r["ts"] * 1000
        out.append(sdk_trace.ReadableSpan(
            f"chat {d['model'] or 'model'}", context=context(d["trace_id"], d["span_id"]), resource=resource,
            attributes=attrs, kind=trace.SpanKind.CLIENT, status=trace.Status(trace.StatusCode.OK),
            start_time=end_ns - int(d["latency_s"] * 1e9), end_time=end_ns, instrumentation_scope=scope))
    return out


def export_spans(run_dir: str | Path, exporter: Any) -> int:
    """Send the run's spans through any OpenTelemetry ``SpanExporter``; returns how many were sent."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    batch = spans(run_dir)
    if batch and exporter.export(batch) is not SpanExportResult.SUCCESS:
        raise TorchWitnessError(f"the span exporter {type(exporter).__name__} refused {len(batch)} spans")
    return len(batch)


def otlp_json(run_dir: str | Path) -> dict[str, Any]:
    """The run's spans as an OTLP/JSON ``ExportTraceServiceRequest`` (ids in hex, as OTLP/JSON requires)."""
    try:
        from google.protobuf.json_format import MessageToDict
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    except ImportError as e:
        raise InputError("OTLP/JSON export needs the otel extra: pip install 'torchwitness[otel]'") from e
    doc = MessageToDict(encode_spans(spans(run_dir)))
    for resource_spans in doc.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return doc


def write_otlp_json(run_dir: str | Path, path: str | Path) -> int:
    """Write :func:`otlp_json` to ``path``; returns the number of spans written."""
    doc = otlp_json(run_dir)
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")
    return sum(len(s.get("spans", [])) for rs in doc.get("resourceSpans", []) for s in rs.get("scopeSpans", []))
