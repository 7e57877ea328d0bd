"""The agent demo stage, on the char-level fallback model (fast): traces, statistics, OTLP file, no content."""

from __future__ import annotations

import json

from rich.console import Console

from torchwitness.demo.agent import QUESTION, run_agent_demo
from torchwitness.ledger import iter_records, verify_run


def test_agent_demo_records_a_full_trace(tmp_path):
    run_dir = run_agent_demo(tmp_path, model="char", train_seconds=1.0, console=Console(quiet=True))
    verify_run(run_dir)
    steps = [r["data"] for r in iter_records(run_dir, kinds={"agent.step"})]
    assert [s["kind"] for s in steps].count("tool_call") == 2
    assert {s["kind"] for s in steps} == {"agent", "plan", "tool_call", "tool_result", "model_call", "final_answer"}
    gens = [r["data"] for r in iter_records(run_dir, kinds={"llm.generation"})]
    assert [g["sampling"]["do_sample"] for g in gens] == [False, True]
    assert all(g["output_tokens"] == 32 and g["stats"]["perplexity"] > 1 for g in gens)
    doc = json.loads((tmp_path / "agent-spans.otlp.json").read_text())
    names = [s["name"] for s in doc["resourceSpans"][0]["scopeSpans"][0]["spans"]]
    assert "invoke_agent toy-planner" in names and "execute_tool multiply" in names
    blob = b"".join(p.read_bytes() for p in run_dir.rglob("*") if p.is_file())
    assert QUESTION.encode() not in blob and QUESTION not in json.dumps(doc)
