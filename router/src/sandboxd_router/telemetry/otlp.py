"""The router's spans, exported through OTLP with the OpenTelemetry SDK's exporter — from a
thread of the telemetry process, never from the request path.

Off unless the standard variables ask for it: `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set (or `OTEL_TRACES_EXPORTER=otlp`), and neither
`OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`. The exporter reads the rest of its
configuration (headers, timeout, compression, certificates) from the same variables, and the
resource from `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` (service name by default
`sandboxd-router`). Protocol: `http/protobuf` (the SDK's HTTP exporter).

A span is a request record (the `requests` entries of `POST /v1/router-signals`: ids, name,
start, duration, attributes, events), so the spans a backend receives and the traces the control
plane keeps are the same spans, with the same ids. The queue is bounded: when the endpoint is
slow or down, what does not fit is dropped and counted (`dropped`), as is every span of a batch
the exporter gave up on (`failed`); routing never waits for any of it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from sandboxd_router.telemetry import records, traceparent
from sandboxd_router.telemetry.observed import Observed

log = logging.getLogger("sandboxd_router.telemetry")

Record = Mapping[str, Any]
TRUE = ("true", "1", "yes")


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether the standard OTel variables ask for an OTLP span exporter."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in TRUE:
        return False
    exporters = {e.strip().lower() for e in environ.get("OTEL_TRACES_EXPORTER", "").split(",")}
    if "none" in exporters:
        return False
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    return bool(endpoint) or "otlp" in exporters


class SpanExport:
    """A bounded queue of records and the thread that turns them into spans and exports them."""

    def __init__(
        self,
        exporter: Any,
        *,
        resource: Any,
        max_queue: int = 4096,
        batch: int = 512,
        delay: float = 1.0,
    ) -> None:
        self._exporter = exporter
        self._resource = resource
        self._batch = batch
        self._delay = delay
        self._queue: deque[Record] = deque()
        self._max_queue = max_queue
        self._wake = threading.Condition()
        self._closing = False
        self.exported = 0
        self.dropped = 0
        """Records that found the queue full (the endpoint slower than the traffic)."""
        self.failed = 0
        """Spans of batches the exporter gave up on (the endpoint down, or refusing)."""
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._thread.start()

    def full(self) -> bool:
        """The queue has no room: the next span is dropped (and counted now)."""
        if len(self._queue) < self._max_queue:
            return False
        self._count_drop()
        return True

    def _count_drop(self) -> None:
        self.dropped += 1
        if self.dropped & (self.dropped - 1) == 0:  # 1, 2, 4, 8, ...: said, not shouted
            log.warning("%d spans dropped: the OTLP endpoint is slower than the traffic",
                        self.dropped)  # fmt: skip

    def add(self, record: Record) -> None:
        """Queue one span; never blocks (a full queue drops it and counts it)."""
        with self._wake:
            if len(self._queue) >= self._max_queue:
                self._count_drop()
                return
            self._queue.append(record)
            if len(self._queue) >= self._batch:
                self._wake.notify()

    def close(self, timeout: float = 1.0) -> None:
        """Export what is queued, for at most `timeout` seconds, then stop."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)
        left = len(self._queue)
        if left:
            self.dropped += left
            log.warning("%d spans not exported at shutdown", left)
        self._exporter.shutdown()

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._closing and len(self._queue) < self._batch:
                    self._wake.wait(self._delay)
                batch = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
                closing = self._closing
            if batch:
                self._export(batch)
            if closing and not self._queue:
                return

    def _export(self, batch: Sequence[Record]) -> None:
        from opentelemetry.sdk.trace.export import SpanExportResult

        spans = [to_span(r, self._resource) for r in batch]
        try:
            result = self._exporter.export(spans)
        except Exception:  # an exporter bug must not end the thread: count and go on
            log.exception("the OTLP exporter failed")
            result = None
        if result == SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            if not self.failed:
                log.warning("cannot export spans over OTLP; they are dropped and counted")
            self.failed += len(spans)


class SpanSink:
    """A `Sink`: every request that carried a sandbox's key becomes a span, and a `baseline`
    fraction of the others (chosen by trace id, so that every router keeps the same traces;
    at random without one). Requests no service was routed for make none."""

    def __init__(self, export: SpanExport, *, baseline: float = 0.0) -> None:
        self.export = export
        self.baseline = baseline
        self._threshold = int(baseline * (1 << 56))

    def add(self, observed: Observed) -> None:
        if observed.service == "-" or not (observed.sandbox or self._sampled(observed)):
            return
        if self.export.full():  # (counted there; building the span first would cost 7 µs)
            return
        self.export.add(records.wire(records.Pending(0, observed)))

    def _sampled(self, observed: Observed) -> bool:
        if self._threshold <= 0:
            return False
        context = traceparent.parse(observed.traceparent)
        if context is None:
            return random.random() < self.baseline  # noqa: S311 (sampling, not secrecy)
        return int(context[0][-14:], 16) < self._threshold

    async def tick(self) -> None:
        pass

    async def close(self) -> None:
        await asyncio.to_thread(self.export.close)


def to_span(record: Record, resource: Any) -> Any:
    """A request record as the SDK's `ReadableSpan` (a child of the request's `traceparent`)."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    # a request without a (valid) traceparent: the router's span starts a trace of its own
    trace_id = int(record.get("traceId") or secrets.token_hex(16), 16)
    context = SpanContext(
        trace_id, int(record["spanId"], 16), is_remote=False, trace_flags=TraceFlags(1)
    )
    parent_id = record.get("parentSpanId")
    parent = (
        SpanContext(trace_id, int(parent_id, 16), is_remote=True, trace_flags=TraceFlags(1))
        if parent_id
        else None
    )
    start = int(record["start"] * 1e9)
    end = start + int(record["durationMs"] * 1e6)
    events = [
        Event(e["name"], dict(e.get("attributes") or {}), int(e["time"] * 1e9))
        for e in record.get("events") or ()
    ]
    status = Status(StatusCode.ERROR) if record.get("error") else Status(StatusCode.UNSET)
    kind = SpanKind.CLIENT if record.get("kind") == "client" else SpanKind.SERVER
    return ReadableSpan(
        name=str(record["name"]),
        context=context,
        parent=parent,
        resource=resource,
        attributes=dict(record.get("attributes") or {}),
        events=events,
        kind=kind,
        status=status,
        start_time=start,
        end_time=end,
        instrumentation_scope=InstrumentationScope("sandboxd_router"),
    )


def from_env(environ: Mapping[str, str] | None = None) -> SpanExport | None:
    """The exporter the standard variables ask for, or None (off). Imported only when on: the
    SDK costs nothing to a router that does not export."""
    env = os.environ if environ is None else environ
    if not enabled(env):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource

    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": "sandboxd-router"}
    return SpanExport(OTLPSpanExporter(), resource=Resource.create(attributes))
