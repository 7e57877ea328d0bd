"""OpenTelemetry export over OTLP/HTTP to a real local receiver that decodes the protobuf payload."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from torchwitness.errors import ExportError
from torchwitness.integrations.otel_export import export_otel
from torchwitness.report.evidence import Evidence, entries


class Receiver(ThreadingHTTPServer):
    def __init__(self, status: int = 200) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.status = status
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf"
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        self.server.requests.append(req)
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def receiver():
    servers = []

    def start(status: int = 200) -> Receiver:
        srv = Receiver(status)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _attrs(span) -> dict:
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = v.string_value if v.HasField("string_value") else v.int_value if v.HasField("int_value") \
            else v.double_value if v.HasField("double_value") else v.bool_value
    return out


def test_spans_reach_the_receiver(evidence_run: Path, receiver) -> None:
    srv = receiver()
    sent = export_otel(evidence_run, endpoint=f"http://127.0.0.1:{srv.server_port}/v1/traces")
    spans = [s for req in srv.requests for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(spans) == sent
    ev = Evidence.load(evidence_run)
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1 and roots[0].name == f"run {ev.run_id}"
    root = roots[0]
    assert all(s.trace_id == root.trace_id and (s is root or s.parent_span_id == root.span_id) for s in spans)
    names = [s.name for s in spans]
    assert names.count("metrics") == len(ev.kind("metrics")) and names.count("evaluation") == len(ev.kind("eval"))
    audited = [e["step"] for r in ev.kind("train.audit") for _, e in entries(r)]
    assert names.count("audited step") == len(audited) == 40
    assert sorted(_attrs(s)["torchwitness.step"] for s in spans if s.name == "audited step") == audited
    assert names.count("certificate") == len(ev.kind("edit.certificate"))
    assert "finding TW101" in names
    for s in spans:
        if s is root:
            assert _attrs(s)["torchwitness.root"].startswith("sha256:")
            continue
        a = _attrs(s)
        record = ev.seq(a["torchwitness.seq"])
        assert record["kind"] == a["torchwitness.kind"]
        assert s.start_time_unix_nano <= s.end_time_unix_nano == record["ts"] * 1000
    error = next(s for s in spans if s.name == "finding TW101")
    assert error.status.code == 2  # STATUS_CODE_ERROR
    epochs = sorted((s for s in spans if s.name == "metrics"), key=lambda s: s.start_time_unix_nano)
    assert epochs[1].start_time_unix_nano == epochs[0].end_time_unix_nano  # epochs tile the run
    resource = {kv.key: kv.value.string_value for kv in srv.requests[0].resource_spans[0].resource.attributes}
    assert resource["service.name"] == "torchwitness" and resource["torchwitness.run"] == ev.run_id


def test_refused_export_raises(evidence_run: Path, receiver) -> None:
    srv = receiver(status=400)
    with pytest.raises(ExportError, match="did not accept"):
        export_otel(evidence_run, endpoint=f"http://127.0.0.1:{srv.server_port}/v1/traces", timeout=2)
