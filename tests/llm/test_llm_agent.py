"""Agent tracing: nesting, errors, the decorator, GenAI attributes per operation, and a real OTLP/HTTP receiver."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading

import pytest
import torch

from torchwitness.errors import InputError
from torchwitness.integrations.otel_genai import export_spans, spans, write_otlp_json
from torchwitness.ledger import iter_records, verify_run
from torchwitness.probes.agent import AgentTracer, current_step
from torchwitness.probes.generation import GenerationProbe
from torchwitness.run import Run

# What each GenAI operation's span must carry (OpenTelemetry GenAI semantic conventions: required, conditionally
# required when known, and the recommended attributes this library always knows).
REQUIRED = {
    "invoke_agent": {"gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.agent.name"},
    "execute_tool": {"gen_ai.operation.name", "gen_ai.tool.name", "gen_ai.tool.call.id", "gen_ai.tool.type"},
    "chat": {"gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model",
             "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.response.finish_reasons"},
}
CUSTOM_OPERATIONS = ("plan", "tool_result", "final_answer")  # no GenAI operation fits: custom values
SECRET = "Ophelia-Grantchester-0042"


def _semconv_names() -> set[str]:
    from opentelemetry.semconv._incubating.attributes import error_attributes, gen_ai_attributes

    names = {v for k, v in vars(gen_ai_attributes).items() if k.startswith("GEN_AI_") and isinstance(v, str)}
    return names | {error_attributes.ERROR_TYPE}


def _agent_run(run_dir, model):
    with Run(run_dir) as run:
        tracer = AgentTracer(run)
        probe = GenerationProbe(run, model_name="tiny-llama")

        @tracer.traced_tool(description="Adds two integers.")
        def add(a: int, b: int) -> int:
            return a + b

        @tracer.traced_tool()
        def lookup(city: str) -> str:
            raise KeyError(f"no weather for {city}")

        with tracer.agent("planner", model="tiny-llama", input=f"question from {SECRET}",
                          conversation_id="conv-7") as agent:
            with tracer.plan(input=SECRET) as plan:
                plan.output = ["add", "lookup", "model"]
            assert add(2, 3) == 5
            tracer.tool_result("add", output=5).close()
            with pytest.raises(KeyError):
                lookup(SECRET)
            with tracer.model_call("tiny-llama", temperature=1.0, server_address="127.0.0.1") as chat:
                probe.generate(model, torch.tensor([[1, 5, 9]]), max_new_tokens=5, do_sample=False,
                               eos_token_id=None, prompt=SECRET)
                chat.output = "five"
            with tracer.handoff("reviewer", input="check five"), tracer.agent("reviewer"):
                tracer.final_answer(output=f"5, {SECRET}").close()
            agent.output = "5"
        probe.generate(model, torch.tensor([[1, 2]]), max_new_tokens=3, do_sample=False, eos_token_id=None)
    return run_dir


@pytest.fixture
def agent_run(tmp_path, tiny_llama):
    return _agent_run(tmp_path / "run", tiny_llama)


def test_steps_nest_and_join_with_generations(agent_run):
    verify_run(agent_run, deep=True)  # deep: every agent.step and llm.generation fits its registered schema
    steps = {r["data"]["name"]: r["data"] for r in iter_records(agent_run, kinds={"agent.step"})
             if r["data"]["kind"] != "tool_result"}
    root = steps["planner"]
    assert root["parent_span_id"] is None and root["kind"] == "agent"
    for name in ("plan", "add", "lookup", "tiny-llama", "reviewer"):
        assert steps[name]["parent_span_id"] == root["span_id"]
        assert steps[name]["trace_id"] == root["trace_id"]
    handoff = steps["reviewer"]  # the handoff closes after the agent run inside it, so it is the later record
    assert handoff["kind"] == "handoff"
    reviewer_run = next(r["data"] for r in iter_records(agent_run, kinds={"agent.step"})
                        if r["data"]["kind"] == "agent" and r["data"]["name"] == "reviewer")
    assert reviewer_run["parent_span_id"] == handoff["span_id"]
    assert steps["final_answer"]["parent_span_id"] == reviewer_run["span_id"]
    assert steps["lookup"]["status"] == "error" and steps["lookup"]["error_type"] == "KeyError"
    assert steps["lookup"]["attributes"]["error.type"] == "KeyError"
    assert steps["add"]["attributes"]["gen_ai.tool.description"] == "Adds two integers."
    assert all(s["duration_s"] >= 0 and s["end_us"] >= s["start_us"] for s in steps.values())
    assert all(set(s["input"]) == {"$personal"} for s in steps.values() if "input" in s)
    gens = [r["data"] for r in iter_records(agent_run, kinds={"llm.generation"})]
    chat = steps["tiny-llama"]
    assert (gens[0]["trace_id"], gens[0]["span_id"]) == (chat["trace_id"], chat["span_id"])
    assert gens[1]["trace_id"] != root["trace_id"]
    a = chat["attributes"]
    assert a["gen_ai.usage.output_tokens"] == 5 and a["gen_ai.usage.input_tokens"] == 3
    assert a["torchwitness.llm.perplexity"] == pytest.approx(gens[0]["stats"]["perplexity"], rel=1e-6)
    assert a["gen_ai.request.temperature"] == 1.0
    assert current_step() is None


def test_spans_carry_the_required_genai_attributes(agent_run):
    from opentelemetry.semconv._incubating.attributes.server_attributes import SERVER_ADDRESS

    known = _semconv_names() | {SERVER_ADDRESS}
    exported = spans(agent_run)
    ops = {}
    for span in exported:
        attrs = dict(span.attributes)
        for key in attrs:
            assert key in known or key.startswith("torchwitness."), key
        op = attrs["gen_ai.operation.name"]  # every span names its operation
        ops.setdefault(op, []).append(span)
        assert span.status.status_code.name in ("UNSET", "ERROR")  # success leaves the status unset
        if op in CUSTOM_OPERATIONS:
            assert span.name in (op, f"{op} add")  # no "final_answer final_answer"
            continue
        missing = REQUIRED[op] - set(attrs)
        assert not missing, f"{span.name}: missing {missing}"
        target = {"invoke_agent": "gen_ai.agent.name", "execute_tool": "gen_ai.tool.name",
                  "chat": "gen_ai.request.model"}[op]
        assert span.name == f"{op} {attrs[target]}"
    assert sorted(ops) == ["chat", "execute_tool", "final_answer", "invoke_agent", "plan", "tool_result"]
    assert len(ops["chat"]) == 2  # the step's chat span and the stand-alone generation
    # one span per agent invocation: the handoff to the reviewer and its run are one invoke_agent span
    agents = {s.attributes["gen_ai.agent.name"]: s for s in ops["invoke_agent"]}
    assert len(ops["invoke_agent"]) == len(agents) == 2 and all("gen_ai.agent.id" in s.attributes
                                                               for s in agents.values())
    planner, reviewer = agents["planner"], agents["reviewer"]
    assert reviewer.parent.span_id == planner.context.span_id
    answer = ops["final_answer"][0]
    assert answer.parent.span_id == reviewer.context.span_id and answer.attributes["gen_ai.agent.name"] == "reviewer"
    # the conversation id reaches every step inside the agent; the agent sums its model calls' usage
    inside = [s for s in exported if s.context.trace_id == planner.context.trace_id]
    assert {s.attributes.get("gen_ai.conversation.id") for s in inside} == {"conv-7"}
    chat = next(s for s in ops["chat"] if s.context.trace_id == planner.context.trace_id)
    assert chat.attributes["server.address"] == "127.0.0.1"
    for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
        assert planner.attributes[key] == chat.attributes[key] > 0
    lookup = next(s for s in ops["execute_tool"] if s.attributes["gen_ai.tool.name"] == "lookup")
    assert lookup.status.status_code.name == "ERROR"


class _Receiver(http.server.BaseHTTPRequestHandler):
    requests: list[bytes]

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append((self.path, self.headers.get("Content-Type"), body))
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:
        pass


def test_a_real_otlp_http_endpoint_receives_the_spans(agent_run):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    handler = type("Receiver", (_Receiver,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{server.server_port}/v1/traces", timeout=10)
        sent = export_spans(agent_run, exporter)
        exporter.shutdown()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert sent == 9
    (path, content_type, body), = handler.requests
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(body)
    got = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(got) == sent
    steps = {r["data"]["span_id"]: r["data"] for r in iter_records(agent_run, kinds={"agent.step"})}
    for span in got:
        if span.span_id.hex() in steps:
            d = steps[span.span_id.hex()]
            assert span.trace_id.hex() == d["trace_id"] and span.name == d["span_name"]
            parent = steps.get(d["parent_span_id"] or "")
            # the agent run a handoff started stands for both and hangs where the handoff did
            expected = parent["parent_span_id"] if parent and parent["kind"] == "handoff" else d["parent_span_id"]
            assert span.parent_span_id.hex() == (expected or "")
    resource = {a.key: a.value.string_value for a in request.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "torchwitness" and resource["torchwitness.run.id"]
    assert SECRET.encode() not in body


def test_otlp_json_file_has_hex_ids_and_no_content(agent_run, tmp_path):
    n = write_otlp_json(agent_run, tmp_path / "spans.json")
    text = (tmp_path / "spans.json").read_text()
    doc = json.loads(text)
    first = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert n == 9 and len(first["traceId"]) == 32 and len(first["spanId"]) == 16
    assert SECRET not in text and "hmac-sha256:" in text
    assert SECRET.encode() not in b"".join(p.read_bytes() for p in agent_run.rglob("*") if p.is_file())


def test_async_steps_and_unknown_kinds(tmp_path):
    async def main(tracer):
        async with tracer.agent("async-agent") as agent:
            async with tracer.tool("t", input=1) as tool:
                await asyncio.sleep(0)
                tool.output = 2
            return agent.span_id, tool.parent.span_id

    with Run(tmp_path / "run") as run:
        tracer = AgentTracer(run)
        parent, child_parent = asyncio.run(main(tracer))
        with pytest.raises(InputError, match="unknown agent step kind"):
            tracer.step("think", "x")
    assert parent == child_parent


def test_a_root_step_joins_the_applications_active_otel_span(tmp_path):
    from opentelemetry.sdk.trace import TracerProvider

    otel = TracerProvider().get_tracer("app")
    with Run(tmp_path / "run") as run, otel.start_as_current_span("http request") as outer, \
            AgentTracer(run).agent("inner"):
        pass
    ctx = outer.get_span_context()
    (step,) = [r["data"] for r in iter_records(tmp_path / "run", kinds={"agent.step"})]
    assert step["trace_id"] == f"{ctx.trace_id:032x}" and step["parent_span_id"] == f"{ctx.span_id:016x}"
