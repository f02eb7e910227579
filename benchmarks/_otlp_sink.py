"""A tiny OTLP/HTTP trace receiver for the signals benchmark: answers every `POST /v1/traces`
with 200 (an empty `ExportTraceServiceResponse`: no bytes) and counts the spans; `GET /count`
returns `{"spans": n, "posts": m}`.

Run:  python benchmarks/_otlp_sink.py PORT   (the benchmark pins it to core 1, beside wrk)

It shares a core with the load generator, so it must cost what a receiver that only counts
spans could: it walks the protobuf's length-delimited fields down to the spans and counts them,
skipping each span whole, instead of building a message object for every span and attribute
(opentelemetry-proto's classes took ~2.5 µs of CPU a span; this ~0.2). Every span is still
counted exactly.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_lock = threading.Lock()
_counts = {"spans": 0, "posts": 0}

# field keys, `(number << 3) | 2` (length-delimited): ExportTraceServiceRequest.resource_spans
# (1), ResourceSpans.scope_spans (2), ScopeSpans.spans (2)
_RESOURCE_SPANS = 0x0A
_SCOPE_SPANS = 0x12
_SPANS = 0x12


def count_spans(body: bytes) -> int:
    """The spans of an `ExportTraceServiceRequest` (ValueError if it is not one)."""
    spans = 0
    for resource in _fields(body, 0, len(body), _RESOURCE_SPANS):
        for scope in _fields(body, *resource, _SCOPE_SPANS):
            spans += _spans(body, *scope)
    return spans


def _spans(data: bytes, at: int, end: int) -> int:
    """`_fields(data, at, end, _SPANS)`'s count, unrolled for what a span's field is (the
    per-span loop is the receiver's cost): its one-byte key, a length of one or two bytes."""
    count = 0
    while at < end:
        if data[at] != _SPANS:  # (the scope, a schema URL: the long way)
            at = _skip(data, at)
            continue
        low = data[at + 1]
        if low < 0x80:
            at += 2 + low
        elif data[at + 2] < 0x80:
            at += 3 + ((low & 0x7F) | (data[at + 2] << 7))
        else:
            size, at = _varint(data, at + 1)
            at += size
        count += 1
    if at != end:
        raise ValueError("a field runs past its message")
    return count


def _skip(data: bytes, at: int) -> int:
    """Past the field at `at`."""
    key, at = _varint(data, at)
    wire = key & 7
    if wire == 2:
        size, at = _varint(data, at)
        return at + size
    if wire == 0:
        return _varint(data, at)[1]
    if wire in (1, 5):
        return at + (8 if wire == 1 else 4)
    raise ValueError(f"wire type {wire}")


def _fields(data: bytes, at: int, end: int, wanted: int) -> list[tuple[int, int]]:
    """(start, end) of each length-delimited field keyed `wanted` in data[at:end]; the other
    fields skipped by their wire type."""
    found = []
    while at < end:
        key, past_key = _varint(data, at)
        if key == wanted:
            size, start = _varint(data, past_key)
            found.append((start, start + size))
        at = _skip(data, at)
    if at != end:
        raise ValueError("a field runs past its message")
    return found


def _varint(data: bytes, at: int) -> tuple[int, int]:
    byte = data[at]
    if byte < 0x80:  # (most keys and lengths below 128: one byte)
        return byte, at + 1
    value, shift = 0, 0
    while byte & 0x80:
        value |= (byte & 0x7F) << shift
        shift += 7
        at += 1
        byte = data[at]
    return value | (byte << shift), at + 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's exporter uses it

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            spans = count_spans(body)
        except (ValueError, IndexError):
            self._answer(b"not an ExportTraceServiceRequest", "text/plain", 400)
            return
        with _lock:
            _counts["spans"] += spans
            _counts["posts"] += 1
        self._answer(b"", "application/x-protobuf")

    def do_GET(self) -> None:
        with _lock:
            body = json.dumps(_counts).encode()
        self._answer(body, "application/json")

    def _answer(self, body: bytes, content_type: str, status: int = 200) -> None:
        self.send_response(status)
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
