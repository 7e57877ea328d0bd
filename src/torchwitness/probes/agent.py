"""Agent tracing: runs and steps of an agent as ``agent.step`` records that export as OpenTelemetry GenAI spans.

A step is a context manager (sync or async). Steps nest through a context variable, so a tool called inside an
agent run is its child wherever the call happens, and a :class:`~torchwitness.probes.generation.GenerationProbe`
call inside a ``model_call`` step attaches its token statistics and token usage to that step. Each step gets
W3C-sized trace and span ids, recorded in the ledger so ledger records and exported spans can be joined.

A root step opened while the application has an active OpenTelemetry span joins that span's trace as its child.

Inputs, outputs and error messages enter only through the tracer's
:class:`~torchwitness.controls.content.ContentPolicy` (commitments by default); a non-string value is committed
as its canonical JSON text.

==================  ==========================  ===============================================
step kind           ``gen_ai.operation.name``   span name
==================  ==========================  ===============================================
``agent``           ``invoke_agent``            ``invoke_agent {agent name}``
``handoff``         ``invoke_agent``            ``invoke_agent {target agent}`` (one span with the agent it starts)
``tool_call``       ``execute_tool``            ``execute_tool {tool name}``
``model_call``      ``chat``                    ``chat {model}``
``plan``            ``plan`` (custom)           ``plan``, or ``plan {name}``
``tool_result``     ``tool_result`` (custom)    ``tool_result {tool name}``
``final_answer``    ``final_answer`` (custom)   ``final_answer``, or ``final_answer {name}``
==================  ==========================  ===============================================

The GenAI conventions define no operation for planning, handing a tool's result back or answering, so those three
carry custom operation names (the conventions allow custom values). An agent's ``gen_ai.conversation.id`` is
inherited by every step inside it; its span sums the token usage of the model calls made inside it.

Example::

    tracer = AgentTracer(run, provider="transformers")
    with tracer.agent("planner", model="smollm2-135m", input=question) as agent:
        with tracer.plan(input=question) as plan:
            plan.output = ["add", "lookup"]
        with tracer.tool("add", input={"a": 2, "b": 3}) as call:
            call.output = 5
        with tracer.model_call("smollm2-135m") as chat:
            probe.generate(model, **inputs)         # token stats land on this step
        tracer.final_answer(output="5").close()
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, Literal, TypeVar

import msgspec

from torchwitness.controls.content import ContentPolicy, ledger_of
from torchwitness.errors import InputError
from torchwitness.ledger.schema import register_kind
from torchwitness.probes.genai_tally import GenerationTally

StepKind = Literal["agent", "plan", "tool_call", "tool_result", "model_call", "handoff", "final_answer"]
STEP_KINDS: tuple[str, ...] = ("agent", "plan", "tool_call", "tool_result", "model_call", "handoff", "final_answer")
OPERATIONS = {"agent": "invoke_agent", "handoff": "invoke_agent", "tool_call": "execute_tool", "model_call": "chat",
              "plan": "plan", "tool_result": "tool_result", "final_answer": "final_answer"}
_USAGE = ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")
# chat leaves the process boundary conceptually (a model server); the rest runs in-process.
SPAN_KINDS = {"model_call": "client"}

_CURRENT: ContextVar[Step | None] = ContextVar("torchwitness_agent_step", default=None)
F = TypeVar("F", bound=Callable[..., Any])


def new_trace_id() -> str:
    """A random 16-byte W3C trace id, lower-case hex."""
    return os.urandom(16).hex()


def new_span_id() -> str:
    """A random 8-byte W3C span id, lower-case hex."""
    return os.urandom(8).hex()


def _ambient_otel_span() -> tuple[str, str] | None:
    """(trace id, span id) of the caller's active OpenTelemetry span, so an agent run joins the service's trace.

    Looked up only if the application already imported OpenTelemetry: we never import it on its behalf.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    return (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}") if ctx.is_valid else None


def current_step() -> Step | None:
    """The innermost open step in this thread or task, if any."""
    return _CURRENT.get()


class AgentStepRecord(msgspec.Struct):
    """One agent step (a span): ids, timing, status, GenAI attributes, content commitments."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    kind: str
    name: str
    span_name: str
    span_kind: str  # "internal" or "client"
    start_us: int
    end_us: int
    duration_s: float
    status: str  # "ok" or "error"
    attributes: dict[str, Any]
    error_type: str | None = None
    input: dict[str, str] | None = None
    output: dict[str, str] | None = None
    error: dict[str, str] | None = None
    input_redactions: dict[str, int] | None = None
    output_redactions: dict[str, int] | None = None
    error_redactions: dict[str, int] | None = None


register_kind("agent.step", AgentStepRecord)


class Step:
    """An open agent step. Set ``output`` (any JSON-able value) before it closes; ``set_attribute`` adds a span
    attribute. Use as ``with``/``async with``, or call :meth:`close` for an instantaneous step."""

    def __init__(self, tracer: AgentTracer, kind: str, name: str, *, input: Any = None,
                 attributes: dict[str, Any] | None = None) -> None:
        if kind not in STEP_KINDS:
            raise InputError(f"unknown agent step kind {kind!r}; known: {', '.join(STEP_KINDS)}")
        self.tracer = tracer
        self.kind = kind
        self.name = name
        self.input = input
        self.output: Any = None
        self.attributes: dict[str, Any] = dict(attributes or {})
        self.trace_id = ""
        self.span_id = ""
        self.parent: Step | None = None
        self._token: Token | None = None
        self._start_us = 0
        self._start = 0.0
        self._closed = False
        self._tally = GenerationTally()
        self.usage = [0, 0]  # input and output tokens of the model calls inside (agents and handoffs)
        self.open()

    def open(self) -> Step:
        self.parent = _CURRENT.get()
        self.remote_parent: str | None = None
        if self.parent is not None:
            self.trace_id = self.parent.trace_id
        elif (ambient := _ambient_otel_span()) is not None:
            self.trace_id, self.remote_parent = ambient
        else:
            self.trace_id = new_trace_id()
        self.span_id = new_span_id()
        self._token = _CURRENT.set(self)
        self._start_us = time.time_ns() // 1000
        self._start = time.perf_counter()
        return self

    @property
    def agent(self) -> Step | None:
        """The agent this step runs in (the nearest ``agent`` or ``handoff`` step, itself included)."""
        step: Step | None = self
        while step is not None and step.kind not in ("agent", "handoff"):
            step = step.parent
        return step

    @property
    def agent_name(self) -> str | None:
        return self.agent.name if self.agent is not None else None

    def inherited(self, key: str) -> Any:
        """``key`` from this step's attributes or its nearest ancestor's (a conversation id, a server address)."""
        step: Step | None = self
        while step is not None:
            if step.attributes.get(key) is not None:
                return step.attributes[key]
            step = step.parent
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def add_generation(self, data: dict[str, Any]) -> None:
        """Fold one ``llm.generation`` record's usage and token statistics into this step's attributes."""
        self._tally.add(data)
        # What the caller asked for (gen_ai.request.*) stays as the caller set it; an agent keeps its operation.
        self.attributes.update({k: v for k, v in self._tally.attributes().items()
                                if not (k.startswith("gen_ai.request.") and k in self.attributes)
                                and not (k == "gen_ai.operation.name" and self.kind != "model_call")})
        # the agent's span carries the usage of every model call made inside it
        agent = (self.parent.agent if self.parent is not None else None) if self.kind in ("agent", "handoff") \
            else self.agent
        while agent is not None:
            agent.usage[0] += int(data["input_tokens"])
            agent.usage[1] += int(data["output_tokens"])
            agent = agent.parent.agent if agent.parent is not None else None

    def close(self, error: BaseException | None = None) -> None:
        """End the step and record it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        duration = time.perf_counter() - self._start
        if self._token is not None:
            try:
                _CURRENT.reset(self._token)
            except ValueError:  # closed from another context: restore the parent explicitly
                _CURRENT.set(self.parent)
        self.tracer._record(self, duration, error)

    def __enter__(self) -> Step:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(exc)

    async def __aenter__(self) -> Step:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close(exc)


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


class AgentTracer:
    """Opens agent steps that are recorded as ``agent.step`` records in ``run`` (a ``Run`` or ``Ledger``).

    ``provider`` becomes ``gen_ai.provider.name`` (who serves the model: ``"transformers"``, a custom value, for
    a local Hugging Face model); ``content`` decides what is kept of inputs and outputs (commitments by default);
    ``server_address``/``server_port`` name the model server of every ``model_call``; ``live`` (a
    :class:`~torchwitness.integrations.otel_live.LiveSpans`) streams each step as a span when it ends.
    """

    def __init__(self, run: Any, *, provider: str = "transformers", content: ContentPolicy | None = None,
                 server_address: str | None = None, server_port: int | None = None, live: Any = None) -> None:
        self.run = run
        self.provider = provider
        self.content = content or ContentPolicy()
        self.server_address, self.server_port = server_address, server_port
        self.live = live

    def step(self, kind: StepKind, name: str, *, input: Any = None, **attributes: Any) -> Step:
        """A step of any kind; ``attributes`` are extra span attributes (dotted names via ``**{...}``)."""
        return Step(self, kind, name, input=input, attributes=attributes)

    def agent(self, name: str, *, input: Any = None, model: str | None = None, description: str | None = None,
              conversation_id: str | None = None) -> Step:
        """An agent run (``invoke_agent``): every step opened inside is its descendant.

        ``conversation_id`` (``gen_ai.conversation.id``) ties the runs of one conversation together; steps inside
        inherit it, and so does a nested agent that names none.
        """
        attrs = {"gen_ai.agent.id": uuid.uuid4().hex, "gen_ai.request.model": model,
                 "gen_ai.agent.description": description, "gen_ai.conversation.id": conversation_id}
        return Step(self, "agent", name, input=input, attributes={k: v for k, v in attrs.items() if v is not None})

    def plan(self, *, input: Any = None, name: str = "plan") -> Step:
        return Step(self, "plan", name, input=input)

    def tool(self, name: str, *, input: Any = None, call_id: str | None = None,
             description: str | None = None) -> Step:
        """A tool execution (``execute_tool``)."""
        attrs = {"gen_ai.tool.name": name, "gen_ai.tool.type": "function",
                 "gen_ai.tool.call.id": call_id or uuid.uuid4().hex[:16]}
        if description:
            attrs["gen_ai.tool.description"] = description
        return Step(self, "tool_call", name, input=input, attributes=attrs)

    def tool_result(self, name: str, *, output: Any = None) -> Step:
        """A tool's result handed back to the agent (close it at once, or use ``with``)."""
        step = Step(self, "tool_result", name)
        step.output = output
        return step

    def model_call(self, model: str, *, input: Any = None, server_address: str | None = None,
                   server_port: int | None = None, **request: Any) -> Step:
        """A model request (``chat``). ``request`` takes ``temperature``, ``top_k``, ``top_p``, ``max_tokens``;
        ``server_address``/``server_port`` name a remote model server (default: the tracer's)."""
        attrs = {"gen_ai.request.model": model, **{f"gen_ai.request.{k}": v for k, v in request.items()},
                 "server.address": server_address or self.server_address,
                 "server.port": server_port or self.server_port}
        return Step(self, "model_call", model, input=input, attributes=attrs)

    def handoff(self, to_agent: str, *, input: Any = None) -> Step:
        """Control passed to another agent (``invoke_agent`` of ``to_agent``)."""
        return Step(self, "handoff", to_agent, input=input,
                    attributes={"gen_ai.agent.name": to_agent, "gen_ai.agent.id": uuid.uuid4().hex})

    def final_answer(self, *, output: Any = None, name: str = "final_answer") -> Step:
        step = Step(self, "final_answer", name)
        step.output = output
        return step

    def traced_tool(self, name: str | None = None, *, description: str | None = None) -> Callable[[F], F]:
        """Decorator: every call of the function is an ``execute_tool`` step with its arguments and result.

        >>> import tempfile, os
        >>> os.environ["TORCHWITNESS_KEY_DIR"] = tempfile.mkdtemp()
        >>> from torchwitness.ledger import Ledger
        >>> with Ledger.open(tempfile.mkdtemp() + "/run") as ledger:
        ...     tracer = AgentTracer(ledger)
        ...     @tracer.traced_tool(description="adds two numbers")
        ...     def add(a, b):
        ...         return a + b
        ...     add(2, 3)
        5
        """
        def wrap(fn: F) -> F:
            tool_name = name or fn.__name__

            @functools.wraps(fn)
            def call(*args: Any, **kwargs: Any) -> Any:
                with self.tool(tool_name, input={"args": list(args), "kwargs": kwargs},
                               description=description or (fn.__doc__ or "").strip() or None) as step:
                    result = fn(*args, **kwargs)
                    step.output = result
                    return result

            return call  # type: ignore[return-value]

        return wrap

    # ------------------------------------------------------------------ recording
    def _record(self, step: Step, duration: float, error: BaseException | None) -> None:
        op = OPERATIONS.get(step.kind)
        attrs: dict[str, Any] = {}
        if op is not None:
            attrs["gen_ai.operation.name"] = op
        if step.kind in ("agent", "handoff", "model_call"):
            attrs["gen_ai.provider.name"] = self.provider
        if (agent := step.agent_name) is not None:
            attrs["gen_ai.agent.name"] = agent
        if (conversation := step.inherited("gen_ai.conversation.id")) is not None:
            attrs["gen_ai.conversation.id"] = conversation
        attrs["torchwitness.agent.step.kind"] = step.kind
        attrs.update({k: v for k, v in step.attributes.items() if v is not None})
        if step.kind in ("agent", "handoff") and any(step.usage):
            attrs.update(zip(_USAGE, step.usage, strict=True))
        if error is not None:
            attrs["error.type"] = type(error).__qualname__
        target = attrs.get("gen_ai.request.model", step.name) if step.kind == "model_call" else step.name
        span_name = op if target == step.kind else f"{op} {target}"
        data: dict[str, Any] = {
            "trace_id": step.trace_id, "span_id": step.span_id,
            "parent_span_id": step.parent.span_id if step.parent else step.remote_parent,
            "kind": step.kind, "name": step.name, "span_name": span_name,
            "span_kind": SPAN_KINDS.get(step.kind, "internal"),
            "start_us": step._start_us, "end_us": step._start_us + int(duration * 1e6),
            "duration_s": round(duration, 6), "status": "error" if error is not None else "ok",
            "attributes": attrs,
            "error_type": type(error).__qualname__ if error is not None else None,
        }
        texts = {"input": _as_text(step.input), "output": _as_text(step.output),
                 "error": str(error) if error is not None else None}
        data.update(self.content.commit(self.run, **texts))
        ledger = ledger_of(self.run)
        seq = ledger.append("agent.step", data)
        if self.live is not None:
            # content leaves the process only when the run keeps it, and then redacted as the ledger keeps it
            self.live.on_step(ledger.run_id, data, seq, self.content.shown(**texts))
