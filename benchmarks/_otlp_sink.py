"""A tiny OTLP/HTTP trace receiver for the signals benchmark: answers every `POST /v1/traces`
with 200 (an empty `ExportTraceServiceResponse`) and counts the spans; `GET /count` returns
`{"spans": n, "posts": m}`.

Run:  python benchmarks/_otlp_sink.py PORT   (the benchmark pins it to core 1, beside wrk)

Decoding each body is what a real collector pays too; the benchmark only needs the endpoint
to be alive and to know how many spans arrived (what was exported of what was routed).
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_lock = threading.Lock()
_counts = {"spans": 0, "posts": 0}
_ANSWER = ExportTraceServiceResponse().SerializeToString()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's exporter uses it

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = ExportTraceServiceRequest.FromString(body)
        spans = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with _lock:
            _counts["spans"] += spans
            _counts["posts"] += 1
        self._answer(_ANSWER, "application/x-protobuf")

    def do_GET(self) -> None:
        with _lock:
            body = json.dumps(_counts).encode()
        self._answer(body, "application/json")

    def _answer(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()


if __name__ == "__main__":
    main()
