"""The agent's OpenTelemetry setup: trace context and baggage the SDK's way, spans by OTLP when
the standard `OTEL_*` variables ask for them, and JSON log lines carrying the trace id.

- `setup()` installs the SDK's tracer provider (so every diagnosis has a trace id and its spans
  real ids, exported or not) and instruments every `httpx2` client of this process with
  `opentelemetry-instrumentation-httpx`: each HTTP request becomes a CLIENT span and carries the
  current context's `traceparent` and `baggage` as headers.
- Spans are exported only when asked: `OTEL_TRACES_EXPORTER=otlp|console`, or an OTLP endpoint
  (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; OTLP over HTTP). None
  set: nothing leaves the process. `OTEL_SDK_DISABLED=true` turns the SDK off (no spans, no
  trace ids of its own; a caller's `traceparent` still flows through).
- `params._meta` of every MCP request is filled by the MCP SDK from the same context with the
  same propagators (it injects when it sends), so it always agrees with the headers.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

SERVICE_NAME = "troubleshooter-agent"
ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

log = logging.getLogger("agent")


def exporter_from_env() -> SpanExporter | None:
    """The exporter the `OTEL_*` variables ask for, or None."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    named = os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")[0].strip().lower()
    if not named:
        named = "otlp" if any(os.environ.get(e, "").strip() for e in ENDPOINTS) else "none"
    if named == "otlp":
        return OTLPSpanExporter()
    if named == "console":
        return ConsoleSpanExporter()
    if named != "none":
        raise SystemExit(f"agent: OTEL_TRACES_EXPORTER: {named!r} is not one of otlp, console")
    return None


def setup() -> trace.Tracer:
    """Install the tracer provider and the httpx2 instrumentation; start JSON logging."""
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the default name
    resource = Resource.create({"service.name": SERVICE_NAME}).merge(
        OTELResourceDetector().detect()
    )
    provider = TracerProvider(resource=resource)
    exporter = exporter_from_env()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    # the stable HTTP attribute names (http.request.method, url.full, …) unless told otherwise
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    HTTPX2ClientInstrumentor().instrument()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLines())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return trace.get_tracer("troubleshooter")


def shutdown() -> None:
    """Export what is left (the provider's own limit bounds the wait)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def trace_id() -> str | None:
    """The current trace's id (32 hex digits), or None outside any trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


class JsonLines(logging.Formatter):
    """One JSON object per line, with the trace and span ids of the span current when the line
    was logged, and the record's `fields` (`log.info(..., extra={"fields": {...}})`)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["traceId"] = format(context.trace_id, "032x")
            line["spanId"] = format(context.span_id, "016x")
        line |= getattr(record, "fields", {})
        return json.dumps(line)
