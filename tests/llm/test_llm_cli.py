"""``torchwitness spans`` and ``torchwitness expire`` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from torchwitness.controls.content import ContentPolicy
from torchwitness.ledger import iter_records, verify_run
from torchwitness.probes.agent import AgentTracer
from torchwitness.run import Run


def tw_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torchwitness", *args], capture_output=True, text=True)


def test_spans_and_expire_commands(tmp_path):
    run_dir = tmp_path / "run"
    with Run(run_dir) as run:
        tracer = AgentTracer(run, content=ContentPolicy(retention={"input": 0.001}))
        with tracer.agent("a", input="short-lived question"), tracer.tool("t", input="short-lived too") as t:
            t.output = "kept until erased"  # outputs have no retention period here
    time.sleep(0.01)
    proc = tw_cli("spans", str(run_dir), "--out", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote 2 spans to {tmp_path / 's.json'}"
    assert len(json.loads((tmp_path / "s.json").read_text())["resourceSpans"][0]["scopeSpans"][0]["spans"]) == 2
    proc = tw_cli("expire", str(run_dir))
    assert proc.returncode == 0 and "erased 2 expired" in proc.stdout, proc.stderr
    (erasure,) = [r["data"] for r in iter_records(run_dir, kinds={"erasure"})]
    assert erasure["reason"] == "retention period of 'input' elapsed"
    assert verify_run(run_dir).erased_payloads == 2
    proc = tw_cli("erase", str(run_dir), "--subject", "kept until erased")  # content erases like any subject
    assert proc.returncode == 0 and "erased 1" in proc.stdout, proc.stderr
    assert verify_run(run_dir).erased_payloads == 3
    bad = tw_cli("spans", str(tmp_path / "nope"))
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1


def test_expire_runs_beside_the_application_that_holds_the_run(tmp_path):
    run_dir = tmp_path / "run"
    with Run(run_dir) as run:
        tracer = AgentTracer(run, content=ContentPolicy(retention={"input": 0.001}))
        with tracer.agent("a", input="short-lived question"):
            pass
        run.flush()
        time.sleep(0.01)
        proc = tw_cli("expire", str(run_dir))  # a scheduled job: the application keeps serving
        assert proc.returncode == 0, proc.stderr
        assert "erased 1 expired content value(s)" in proc.stdout and "holds it open" in proc.stdout
        with tracer.agent("a", input="short-lived question"):  # seen again after its erasure: a new commitment
            pass
    first, second = [r["data"]["input"]["$personal"] for r in iter_records(run_dir, kinds={"agent.step"})]
    assert first != second
    assert verify_run(run_dir).erased_payloads == 1


def test_spans_to_an_endpoint_that_takes_nothing_fail_in_one_line(tmp_path):
    """A closed port with nothing to send, and a collector that refuses the spans, are failures, not "sent"."""
    import http.server
    import socket
    import threading

    empty, traced = tmp_path / "empty", tmp_path / "traced"
    with Run(empty) as run:
        run.record("note", {"text": "no agent here"})
    with Run(traced) as run, AgentTracer(run).agent("a", input="q"):
        pass
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1/traces"
    proc = tw_cli("spans", str(empty), "--endpoint", closed)
    assert proc.returncode == 2 and "no spans to send" in proc.stderr and proc.stderr.count("\n") == 1

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(400)  # not retryable: the exporter gives up at once
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = tw_cli("spans", str(traced), "--endpoint", f"http://127.0.0.1:{server.server_port}/v1/traces")
    finally:
        server.shutdown()
    assert proc.returncode == 1 and "could not send the spans" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "sent" not in proc.stdout
