"""OpenTelemetry traces, when asked for (``tracing: {}`` and the ``tracing`` extra): one trace
per message, from its receipt through its task, each model call and tool call, to the
delivered reply.

A task runs later than its message arrived, in another asyncio task, and its model calls arrive
on the agent's socket as requests of their own: so the context is carried, not inherited. The
message's span is remembered under the message's key until its task starts; the task's span
goes to the agent in the task (``Task.trace``, a W3C ``traceparent``), and comes back as the
``traceparent`` header of each model call the agent makes; the agent reports its tool calls'
times with its result, and they become spans of the task; the reply's delivery is remembered
under the task's id. Without OpenTelemetry installed, or with tracing off, every call here is
a no-op, and OpenTelemetry is not even imported (megabytes of every orchestrator's memory).
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

REMEMBERED = 10_000  # span contexts kept for work not yet picked up (oldest forgotten first)


def _opentelemetry() -> ModuleType | None:
    """``opentelemetry.trace``, imported on first use (tracing on); None without the extra."""
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - without the extra
        return None
    return trace


class Tracing:
    """The orchestrator's tracer; ``Tracing(None)`` (or no OpenTelemetry) traces nothing."""

    def __init__(self, provider: Any = None, enabled: bool = True) -> None:
        trace = _opentelemetry() if enabled else None
        self.enabled = trace is not None
        self._tracer: Any = None
        self._trace: Any = trace
        self._remembered: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        if trace is not None:
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )

            source = provider if provider is not None else trace.get_tracer_provider()
            self._tracer = source.get_tracer("clawpen")
            self._propagator = TraceContextTextMapPropagator()

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        parent: tuple[Any, ...] | str | None = None,
        attributes: Mapping[str, Any] | None = None,
        remember: tuple[Any, ...] | None = None,
    ) -> Iterator[Any]:
        """A span, current for the body; its parent is a remembered key, a ``traceparent``,
        or else the current span. ``remember``: keep its context under that key."""
        if not self.enabled:
            yield None
            return
        context = self._parent(parent)
        with self._tracer.start_as_current_span(
            name, context=context, attributes=dict(attributes or {})
        ) as span:
            if remember is not None:
                self._keep(remember, self._trace.set_span_in_context(span))
            yield span

    def record(self, name: str, start: float, end: float, parent: str, agent_id: str) -> None:
        """A finished span under ``parent`` (a ``traceparent``), from wall-clock times the
        agent measured (its tool calls). Nothing without a parent: an agent cannot start
        traces of its own."""
        if not self.enabled or not parent:
            return
        span = self._tracer.start_span(
            name,
            context=self._parent(parent),
            attributes={"clawpen.agent": agent_id},
            start_time=int(start * 1e9),
        )
        span.end(end_time=int(end * 1e9))

    def annotate(self, attributes: Mapping[str, Any]) -> None:
        """Add to the current span (the model call's tokens, once known)."""
        if self.enabled:
            self._trace.get_current_span().set_attributes(dict(attributes))

    def traceparent(self) -> str:
        """The current span as a W3C ``traceparent`` (empty without one)."""
        if not self.enabled:
            return ""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return carrier.get("traceparent", "")

    def forget(self, key: tuple[Any, ...]) -> None:
        self._remembered.pop(key, None)

    def _keep(self, key: tuple[Any, ...], context: Any) -> None:
        self._remembered[key] = context
        self._remembered.move_to_end(key)
        while len(self._remembered) > REMEMBERED:
            self._remembered.popitem(last=False)

    def _parent(self, parent: tuple[Any, ...] | str | None) -> Any:
        if isinstance(parent, tuple):
            return self._remembered.get(parent)
        if isinstance(parent, str) and parent:
            return self._propagator.extract({"traceparent": parent})
        return None


NO_TRACING = Tracing(enabled=False)


def otlp_provider(service_name: str) -> Any:
    """An SDK provider exporting over OTLP, when the SDK and exporter are installed and an
    endpoint is set; else None (the global provider: a no-op unless the process set one)."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or _opentelemetry() is None:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
