"""The router's OTLP span export (`sandboxd_router.telemetry.otlp`): off unless the standard
variables ask for it; records become spans with the request's trace as parent; a slow or dead
endpoint costs drops, counted, and never blocks the caller."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource

from sandboxd_router.telemetry.otlp import SpanExport, enabled, to_span
from tests.support import poll
from tests.support.server import free_port

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def record(**more: Any) -> dict[str, Any]:
    return {"traceId": TRACE, "spanId": "b7ad6b7169203331", "parentSpanId": PARENT,
            "name": "POST", "start": 1765000000.25, "durationMs": 12.5, "status": 503,
            "error": "http_5xx",
            "attributes": {"http.request.method": "POST", "sandboxd.sandbox": "pr-1",
                           "http.response.status_code": 503},
            "events": [{"name": "sandboxd.fault.injected", "time": 1765000000.26,
                        "attributes": {"sandboxd.fault.kind": "http_error"}}],
            **more}  # fmt: skip


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, True),
    ],
)
def test_only_the_standard_variables_turn_it_on(environ: dict[str, str], on: bool) -> None:
    assert enabled(environ) is on


def test_a_record_is_a_child_span_of_the_request_trace() -> None:
    span = to_span(record(), Resource.create({"service.name": "r"}))
    assert f"{span.context.trace_id:032x}" == TRACE
    assert f"{span.context.span_id:016x}" == "b7ad6b7169203331"
    assert f"{span.parent.span_id:016x}" == PARENT and span.parent.is_remote
    assert span.end_time - span.start_time == 12_500_000
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["sandboxd.sandbox"] == "pr-1"
    assert [e.name for e in span.events] == ["sandboxd.fault.injected"]
    assert span.events[0].timestamp == 1765000000260000000


def test_without_a_traceparent_the_span_starts_a_trace() -> None:
    span = to_span(record(traceId=None, parentSpanId=None, error=None), Resource.create({}))
    assert span.parent is None and span.context.trace_id != 0
    assert span.status.status_code.name == "UNSET"


class Collector(http.server.ThreadingHTTPServer):
    """Accepts OTLP/HTTP protobuf posts and keeps the spans (or answers `status`)."""

    def __init__(self, port: int) -> None:
        self.spans: list[Any] = []
        self.status = 200
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.server.status == 200:
            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self.server.spans.extend(scope.spans)
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector(free_port())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def exporter(port: int, *, timeout: float = 2) -> OTLPSpanExporter:
    return OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=timeout)


def test_spans_reach_an_otlp_endpoint(collector: Collector) -> None:
    export = SpanExport(exporter(collector.server_port), resource=Resource.create({}), delay=0.05)
    for i in range(3):
        export.add(record(spanId=f"{i + 1:016x}"))
    poll.until(lambda: len(collector.spans), lambda n: n == 3, timeout=10, what="3 spans")
    export.close()
    assert sorted(s.span_id.hex() for s in collector.spans) == [f"{i:016x}" for i in (1, 2, 3)]
    assert {s.parent_span_id.hex() for s in collector.spans} == {PARENT}
    assert export.exported == 3 and export.dropped == 0 and export.failed == 0


def test_a_dead_endpoint_drops_and_counts_and_never_blocks() -> None:
    dead = free_port()  # nothing listens
    export = SpanExport(
        exporter(dead, timeout=0.5), resource=Resource.create({}), max_queue=100, delay=0.05
    )
    for i in range(1000):  # (a hang here would be the exporter blocking the caller)
        export.add(record(spanId=f"{i + 1:016x}"))
    export.close(timeout=2)
    assert export.exported == 0
    assert export.dropped + export.failed == 1000  # every span accounted for
    assert export.dropped >= 1000 - 100 - 512  # the queue held at most 100 (+ one batch out)


def test_a_refusing_endpoint_counts_failed_batches(collector: Collector) -> None:
    collector.status = 400  # not retried by the exporter
    export = SpanExport(exporter(collector.server_port), resource=Resource.create({}), delay=0.05)
    export.add(record())
    poll.until(lambda: export.failed, timeout=10, what="a failed batch")
    export.close()
    assert export.failed == 1 and export.exported == 0
