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
