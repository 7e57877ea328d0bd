"""Stream agent steps to an OTLP endpoint as they end, beside the ledger (which stays the record).

``LiveSpans`` hands each finished step to OpenTelemetry's ``BatchSpanProcessor``: batching and sending happen on
its own thread, never the caller's. Content (``gen_ai.input.messages`` / ``gen_ai.output.messages``) is sent only
when the tracer's content policy retains it, redacted as the ledger keeps it. ``openinference=True`` adds the
OpenInference attributes Phoenix reads (``openinference.span.kind``, ``input.value``, ``session.id``, ...).

Needs ``pip install 'torchwitness[otel]'``.

Example::

    live = LiveSpans(endpoint="http://127.0.0.1:4318/v1/traces")
    tracer = AgentTracer(run, live=live)
    ...
    live.shutdown()          # sends what is still batched
"""

from __future__ import annotations

from typing import Any

from torchwitness.errors import InputError
from torchwitness.integrations.otel_genai import resource, scope, step_span


class LiveSpans:
    """A span sink for :class:`~torchwitness.probes.agent.AgentTracer` (``live=``)."""

    def __init__(self, exporter: Any = None, *, endpoint: str | None = None, openinference: bool = False,
                 schedule_delay_ms: int = 500) -> None:
        try:
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as e:
            raise InputError("live span export needs the otel extra: pip install 'torchwitness[otel]'") from e
        if (exporter is None) == (endpoint is None):
            raise InputError("LiveSpans takes an exporter or an endpoint (an OTLP/HTTP traces URL), not both")
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=endpoint)
        self.openinference = openinference
        self._processor = BatchSpanProcessor(exporter, schedule_delay_millis=schedule_delay_ms)
        self._resources: dict[str, Any] = {}
        self._scope = scope()
        self.sent = 0

    def on_step(self, run_id: str, data: dict[str, Any], seq: int | None, content: dict[str, str] | None) -> None:
        """Called by the tracer when a step ends: builds its span and queues it (no network on this thread)."""
        res = self._resources.get(run_id)
        if res is None:
            res = self._resources[run_id] = resource(run_id)
        self._processor.on_end(step_span(data, seq, res, self._scope, content=content,
                                         openinference=self.openinference))
        self.sent += 1

    def force_flush(self, timeout_ms: int = 30_000) -> bool:
        return self._processor.force_flush(timeout_ms)

    def shutdown(self) -> None:
        self._processor.shutdown()
