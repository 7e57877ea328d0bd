"""OTLP conformance of the agent spans: integer enums, a protobuf round trip, the service name from the
environment, and live export of each step to a real OTLP/HTTP receiver as it ends."""

from __future__ import annotations

import base64
import http.server
import json
import threading

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from torchwitness.controls.content import ContentPolicy
from torchwitness.integrations.otel_genai import otlp_json
from torchwitness.integrations.otel_live import LiveSpans
from torchwitness.probes.agent import AgentTracer
from torchwitness.run import Run

EMAIL = "ada.lovelace@example.org"


def _run(path, **tracer_kw):
    with Run(path, retain_personal=bool(tracer_kw.get("content"))) as run:
        tracer = AgentTracer(run, **tracer_kw)
        with tracer.agent("helper", conversation_id="c-1", input=f"mail {EMAIL}") as agent:
            with tracer.tool("lookup", input="x") as call:
                call.output = "y"
            agent.output = "done"
    return path


def test_otlp_json_uses_integer_enums_and_round_trips_through_the_protobuf(tmp_path):
    doc = otlp_json(_run(tmp_path / "run"))
    spans = [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert {s["kind"] for s in spans} == {1} and all(isinstance(s["kind"], int) for s in spans)  # INTERNAL
    assert all("code" not in s.get("status", {}) for s in spans)  # unset status on success
    # OTLP/JSON writes ids in hex; proto3 JSON wants base64: convert back and parse with the OTLP protobuf
    for s in spans:
        for key in ("traceId", "spanId", "parentSpanId"):
            if s.get(key):
                s[key] = base64.b64encode(bytes.fromhex(s[key])).decode()
    request = json_format.Parse(json.dumps(doc), ExportTraceServiceRequest())
    parsed = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(parsed) == 2 and {s.name for s in parsed} == {"invoke_agent helper", "execute_tool lookup"}


def _resource(run) -> dict:
    return {a["key"]: a["value"].get("stringValue")
            for a in otlp_json(run)["resourceSpans"][0]["resource"]["attributes"]}


def test_service_name_and_resource_attributes_come_from_the_environment(tmp_path, monkeypatch):
    run = _run(tmp_path / "run")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "support-bot")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=ml")
    attrs = _resource(run)
    assert attrs["service.name"] == "support-bot"
    assert attrs["deployment.environment"] == "test" and attrs["team"] == "ml"
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES")
    assert _resource(run)["service.name"] == "torchwitness"


class _Collector(http.server.BaseHTTPRequestHandler):
    spans: list

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        type(self).spans.extend(s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector():
    handler = type("Collector", (_Collector,), {"spans": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1/traces", handler.spans
    server.shutdown()
    server.server_close()


def test_steps_stream_live_as_they_end_without_content_by_default(tmp_path, collector):
    endpoint, received = collector
    live = LiveSpans(endpoint=endpoint, schedule_delay_ms=50)
    with Run(tmp_path / "run") as run:
        tracer = AgentTracer(run, live=live)
        with tracer.agent("helper", input=f"mail {EMAIL}"):
            with tracer.tool("lookup", input=EMAIL) as call:
                call.output = "y"
            assert live.force_flush()
            assert [s.name for s in received] == ["execute_tool lookup"]  # sent while the agent still runs
    live.shutdown()
    assert sorted(s.name for s in received) == ["execute_tool lookup", "invoke_agent helper"]
    keys = {kv.key for s in received for kv in s.attributes}
    assert "gen_ai.input.messages" not in keys and EMAIL not in str(received)


def test_content_goes_live_only_when_retained_and_then_redacted_with_openinference(tmp_path, collector):
    endpoint, received = collector
    live = LiveSpans(endpoint=endpoint, openinference=True)
    _run(tmp_path / "run", content=ContentPolicy(retain=True), live=live)
    live.shutdown()
    agent = next(s for s in received if s.name == "invoke_agent helper")
    attrs = {kv.key: kv.value.string_value for kv in agent.attributes}
    messages = json.loads(attrs["gen_ai.input.messages"])
    assert messages[0]["role"] == "user" and EMAIL not in messages[0]["parts"][0]["content"]
    assert attrs["openinference.span.kind"] == "AGENT" and attrs["session.id"] == "c-1"
    assert EMAIL not in attrs["input.value"]
