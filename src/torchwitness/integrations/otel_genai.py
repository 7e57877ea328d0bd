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
from torchwitness.probes.genai_tally import GenerationTally

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


def resource(run_id: str) -> Any:
    """The spans' resource: ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` win; ``torchwitness`` otherwise."""
    _, _, Resource, _ = _otel()
    env = Resource.create()  # reads both variables
    attrs: dict[str, Any] = {"torchwitness.run.id": run_id}
    if str(env.attributes.get("service.name", "")).startswith("unknown_service"):
        attrs["service.name"] = "torchwitness"
    return env.merge(Resource(attrs))


def scope() -> Any:
    from torchwitness import __version__

    return _otel()[3]("torchwitness", __version__)


def _context(trace_id: str, span_id: str) -> Any:
    trace = _otel()[0]
    return trace.SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False,
                             trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))


_OPENINFERENCE = {"invoke_agent": "AGENT", "execute_tool": "TOOL", "chat": "LLM"}


def _messages(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}], ensure_ascii=False)


def step_span(d: dict[str, Any], seq: int | None, res: Any, sc: Any, *, parent: str | None = None,
              content: dict[str, str] | None = None, openinference: bool = False) -> Any:
    """One ``agent.step`` record's data as a ``ReadableSpan``. Status stays unset on success, as the conventions
    ask; ``content`` (redacted text, only from a run that retains it) becomes ``gen_ai.*.messages``."""
    trace, sdk_trace, _, _ = _otel()
    attrs = {k: _attr(v) for k, v in d["attributes"].items()}
    attrs.update(_commitments(d))
    if seq is not None:
        attrs["torchwitness.ledger.seq"] = seq
    if d["kind"] == "handoff":  # records from before handoffs carried their own agent id
        attrs.setdefault("gen_ai.agent.id", d["span_id"])
    for field, role, key in (("input", "user", "gen_ai.input.messages"), ("output", "assistant",
                                                                            "gen_ai.output.messages")):
        if content and content.get(field) is not None:
            attrs[key] = _messages(role, content[field])
    if openinference:
        attrs["openinference.span.kind"] = _OPENINFERENCE.get(attrs.get("gen_ai.operation.name"), "CHAIN")
        for field in ("input", "output"):
            if content and content.get(field) is not None:
                attrs[f"{field}.value"] = content[field]
        if "gen_ai.conversation.id" in attrs:
            attrs["session.id"] = attrs["gen_ai.conversation.id"]
        if "gen_ai.request.model" in attrs:
            attrs["llm.model_name"] = attrs["gen_ai.request.model"]
        for ours, theirs in (("gen_ai.usage.input_tokens", "llm.token_count.prompt"),
                             ("gen_ai.usage.output_tokens", "llm.token_count.completion")):
            if ours in attrs:
                attrs[theirs] = attrs[ours]
    status = (trace.Status(trace.StatusCode.ERROR, d["error_type"]) if d["status"] == "error"
              else trace.Status(trace.StatusCode.UNSET))
    parent_id = parent if parent is not None else d["parent_span_id"]
    return sdk_trace.ReadableSpan(
        d["span_name"], context=_context(d["trace_id"], d["span_id"]), resource=res, attributes=attrs,
        parent=_context(d["trace_id"], parent_id) if parent_id else None,
        kind=trace.SpanKind.CLIENT if d["span_kind"] == "client" else trace.SpanKind.INTERNAL,
        status=status, start_time=d["start_us"] * 1000, end_time=d["end_us"] * 1000, instrumentation_scope=sc)


def _handoffs(steps: list[dict[str, Any]]) -> dict[str, str]:
    """Handoff span id -> the span id of the agent run it started, when it started exactly one of that name.

    A handoff and the agent run inside it are one invocation: the run's span stands for both (child of the
    agent that handed off), so counting ``invoke_agent`` spans counts invocations once.
    """
    by_parent: dict[str, list[dict[str, Any]]] = {}
    for r in steps:
        if r["data"]["parent_span_id"]:
            by_parent.setdefault(r["data"]["parent_span_id"], []).append(r["data"])
    merged = {}
    for r in steps:
        d = r["data"]
        if d["kind"] == "handoff":
            runs = [c for c in by_parent.get(d["span_id"], []) if c["kind"] == "agent" and c["name"] == d["name"]]
            if len(runs) == 1:
                merged[d["span_id"]] = runs[0]["span_id"]
    return merged


def spans(run_dir: str | Path) -> list[Any]:
    """The run's agent steps and stand-alone generations as ``opentelemetry.sdk.trace.ReadableSpan`` objects."""
    trace, sdk_trace, _, _ = _otel()
    records = list(iter_records(run_dir, kinds={"agent.step", "llm.generation", "run.start"}))
    res, sc = resource(records[0]["run"] if records else ""), scope()
    steps = [r for r in records if r["kind"] == "agent.step"]
    step_ids = {r["data"]["span_id"] for r in steps}
    merged = _handoffs(steps)
    parents = {d["span_id"]: d["parent_span_id"] for d in (r["data"] for r in steps)}
    out = []
    for r in steps:
        d = r["data"]
        if d["span_id"] in merged:
            continue
        parent = d["parent_span_id"]
        if parent in merged:  # the agent run a handoff started hangs where the handoff did
            parent = parents[parent] or ""
        out.append(step_span(d, r["seq"], res, sc, parent=parent))
    for r in records:
        d = r["data"]
        if r["kind"] != "llm.generation" or d["span_id"] in step_ids:
            continue
        tally = GenerationTally()
        tally.add(d)
        attrs = {**tally.attributes(), **_commitments(d), "torchwitness.ledger.seq": r["seq"]}
        end_ns = r["ts"] * 1000
        out.append(sdk_trace.ReadableSpan(
            f"chat {d['model'] or 'model'}", context=_context(d["trace_id"], d["span_id"]), resource=res,
            attributes=attrs, kind=trace.SpanKind.CLIENT, status=trace.Status(trace.StatusCode.UNSET),
            start_time=end_ns - int(d["latency_s"] * 1e9), end_time=end_ns, instrumentation_scope=sc))
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
    # OTLP/JSON carries enums as integers (proto3's JSON mapping would write their names)
    doc = MessageToDict(encode_spans(spans(run_dir)), use_integers_for_enums=True)
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
