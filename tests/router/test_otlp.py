"""The router's OTLP span export (`sandboxd_router.telemetry.otlp`, `otlpwire`, `otlppost`):
off unless the standard variables ask for it; the bytes it writes, read back with the
generated classes of opentelemetry-proto, are exactly the span `spans.span_of` says, a child of
the request's trace; a slow or dead endpoint costs drops, counted, and never blocks the
caller; the SDK is not even imported when it is off."""

from __future__ import annotations

import datetime
import gzip
import http.server
import ipaddress
import logging
import re
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from sandboxd_router.telemetry import spans, traceparent
from sandboxd_router.telemetry.observed import (
    BASELINE,
    HTTP_5XX,
    JSONRPC,
    OK,
    TOOL_ERROR,
    TRANSPORT,
    Fault,
    Names,
    Observed,
)
from sandboxd_router.telemetry.otlp import (
    Batching,
    SpanExport,
    SpanSink,
    enabled,
    encoder,
    from_env,
)
from sandboxd_router.telemetry.otlppost import Poster, Settings
from sandboxd_router.telemetry.otlpwire import SpanEncoder
from tests.support import poll
from tests.support.server import free_port

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"
SLOW = Fault("latency", "slow-describe")


def observed(**more: Any) -> Observed:
    given: dict[str, Any] = {"end": 1765000000.2625, "duration": 0.0125, "service": "cluster-mcp",
                             "sandbox": "pr-1", "routing_key": "k1", "route": "sandbox",
                             "method": "POST", "status": 200, "bytes_in": 120, "bytes_out": 800,
                             "traceparent": TRACEPARENT, "error": OK, "injected": False,
                             "seq": 17}  # fmt: skip
    return Observed(**(given | more))


KINDS = {
    "plain": observed(method="GET", bytes_in=0),
    "faulted": observed(status=503, error=HTTP_5XX, injected=True, faults=(SLOW,),
                        injected_at=0.002),
    "two faults": observed(injected=True, faults=(SLOW, Fault("reset", "r1")), injected_at=0.01),
    "mcp tool call": observed(rpc_method="tools/call", tool="describe_pod", rpc_id="7"),
    "mcp string id": observed(rpc_method="tools/call", tool="get_logs", rpc_id='"a\\u00e9"',
                              error=TOOL_ERROR),
    "mcp null id": observed(rpc_method="tools/list", rpc_id="null", error=JSONRPC),
    "transport error": observed(status=0, error=TRANSPORT, bytes_out=10),
    "no traceparent": observed(traceparent=None),
    "invalid traceparent": observed(traceparent=f"ff-{TRACE}-{PARENT}-01"),
    "long path": observed(path="/" + "p" * 1500, traceparent=None),  # (a span past 1 KiB)
    "recorded traceparent": observed(traceparent=None, raw_traceparent=TRACEPARENT.encode()),
    "recorded uppercase": observed(traceparent=None,
                                   raw_traceparent=TRACEPARENT.upper().encode()),
    "recorded zero parent": observed(traceparent=None,
                                     raw_traceparent=f"00-{TRACE}-{'0' * 16}-01".encode()),
    "baseline sampled": observed(sandbox="", routing_key="", route=BASELINE),
    "odd method": observed(method="get", bytes_out=1 << 40),
    "unicode sandbox": observed(sandbox="prö-1", seq=1 << 40),
    "past 2**62": observed(seq=(1 << 62) + 5),
    "the last seq": observed(seq=(1 << 64) - 1),
    "mcp session": observed(rpc_method="tools/call", tool="t", rpc_id="8", path="/mcp",
                            session="5e55", protocol="2025-06-18"),
    "mcp stateless": observed(rpc_method="tools/call", tool="t", rpc_id="9", path="/mcp",
                              session="5e55", protocol="2026-07-28"),
    "jsonrpc code": observed(rpc_method="nope", rpc_id="3", error=JSONRPC, rpc_code=-32601),
}  # fmt: skip


def test_the_path_the_session_and_the_json_rpc_code_follow_the_conventions() -> None:
    session = spans.span_of(KINDS["mcp session"]).attributes
    assert session["url.path"] == "/mcp" and session["mcp.session.id"] == "5e55"
    assert session["mcp.protocol.version"] == "2025-06-18"
    stateless = spans.span_of(KINDS["mcp stateless"]).attributes
    assert "mcp.session.id" not in stateless  # the 2026-07-28 revision forbids it
    assert stateless["mcp.protocol.version"] == "2026-07-28"
    coded = spans.span_of(KINDS["jsonrpc code"]).attributes
    assert coded["error.type"] == coded["rpc.response.status_code"] == "-32601"
    uncoded = spans.span_of(KINDS["mcp null id"]).attributes
    assert uncoded["error.type"] == "jsonrpc" and "rpc.response.status_code" not in uncoded
    assert "url.path" not in spans.span_of(observed(path="")).attributes


def plain(value: AnyValue) -> object:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def as_dict(pairs: Any) -> dict[str, object]:
    return {kv.key: plain(kv.value) for kv in pairs}


def decoded(body: bytes) -> tuple[dict[str, object], str, list[Span]]:
    """A request's resource attributes, scope name and spans, by the generated classes."""
    request = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = request.resource_spans
    [scope_spans] = resource_spans.scope_spans
    resource = as_dict(resource_spans.resource.attributes)
    return resource, scope_spans.scope.name, list(scope_spans.spans)


@pytest.mark.parametrize("kind", KINDS)
def test_the_bytes_are_the_span_that_spans_says(kind: str) -> None:
    o = KINDS[kind]
    encoder = SpanEncoder({"service.name": "r"})
    twice = encoder.request([encoder.span(o), encoder.span(o)])  # (the second from the cache)
    _, _, [span, again] = decoded(twice)
    assert without_trace_id(span) == without_trace_id(again)
    expected = spans.span_of(o)
    assert span.name == expected.name
    assert span.kind == Span.SpanKind.SPAN_KIND_SERVER
    assert as_dict(span.attributes) == expected.attributes
    assert len(span.attributes) == len(expected.attributes)  # (no key twice)
    assert [(e.name, e.time_unix_nano, as_dict(e.attributes)) for e in span.events] == [
        (e.name, int(e.time * 1e9), e.attributes) for e in expected.events
    ]
    failed = Status.StatusCode.STATUS_CODE_ERROR
    assert (span.status.code == failed) is expected.failed
    assert span.span_id.hex() == spans.span_id(o.seq)
    assert span.start_time_unix_nano == int(o.start * 1e9)
    assert span.end_time_unix_nano - span.start_time_unix_nano == pytest.approx(o.duration * 1e9)
    if o.traceparent == TRACEPARENT:  # a child of the caller's span
        assert (span.trace_id.hex(), span.parent_span_id.hex()) == (TRACE, PARENT)
        assert span.flags == 0x300  # (the parent is known to be remote)
    else:  # the router's span starts a trace of its own
        assert len(span.trace_id) == 16 and span.trace_id != bytes(16)
        assert span.parent_span_id == b"" and span.flags == 0x100


def without_trace_id(span: Span) -> Span:
    """(A trace the router starts has a random id each time.)"""
    copy = Span()
    copy.CopyFrom(span)
    copy.ClearField("trace_id")
    return copy


def test_what_repeats_is_cached_and_what_varies_is_not() -> None:
    encoder = SpanEncoder({})
    first = observed(rpc_method="tools/call", tool="describe_pod", rpc_id="7")
    then = observed(rpc_method="tools/call", tool="describe_pod", rpc_id='"b"', bytes_in=5,
                    bytes_out=70_000, seq=18, end=1765000001.5, duration=0.5,
                    traceparent=f"00-{'1' * 32}-{'2' * 16}-01")  # fmt: skip
    other = observed(rpc_method="tools/call", tool="get_logs", rpc_id="7", status=500,
                     error=HTTP_5XX)  # fmt: skip
    _, _, got = decoded(encoder.request([encoder.span(o) for o in (first, then, other)]))
    for o, span in zip((first, then, other), got, strict=True):
        assert (span.name, as_dict(span.attributes)) == (spans.span_of(o).name,
                                                         spans.span_of(o).attributes)  # fmt: skip
        assert span.span_id.hex() == spans.span_id(o.seq)
    assert got[1].trace_id.hex() == "1" * 32 and got[1].end_time_unix_nano == 1765000001500000000


def test_spans_of_one_names_object_are_each_their_own() -> None:
    """The spans of one `Names` (as the ring's reader shares it) reuse what the last plain one
    had only while it holds: every field that varies from one to the next is its own."""
    names = Names("cluster-mcp", "pr-1", "k1", "sandbox", "POST")

    def of(**more: Any) -> Observed:
        given = {"service": names.service, "sandbox": names.sandbox, "route": names.route,
                 "method": names.method, "names": names, "traceparent": None,
                 "raw_traceparent": TRACEPARENT.encode()}  # fmt: skip
        return observed(**(given | more))

    batch = [
        of(), of(seq=18, end=1765000001.5), of(bytes_in=7), of(bytes_out=1 << 20),
        of(path="/a"), of(path="/a", seq=19), of(path="/b"), of(path=""),
        of(raw_traceparent=b""), of(raw_traceparent=TRACEPARENT.upper().encode()),
        of(raw_traceparent=f"00-{'1' * 32}-{'2' * 16}-01".encode()),
        of(status=503, error=HTTP_5XX), of(status=503, error=HTTP_5XX, seq=20), of(),
        of(status=404), of(), of(rpc_method="tools/list"), of(),
        of(injected=True, faults=(SLOW,), injected_at=0.002), of(),
        of(rpc_method="tools/call", tool="describe_pod", rpc_id="7"), of(protocol="2025-06-18"),
        of(error=TRANSPORT), of(error=JSONRPC), of(rpc_code=-32601, error=JSONRPC),
        of(tool="t"), of(),
        of(sandbox="pr-2"), of(), of(service="api"), of(), of(route=BASELINE), of(),
        of(method="GET"), of(),
        of(path="/" + "p" * 1500),  # (a span past 1 KiB)
    ]  # fmt: skip
    encoder = SpanEncoder({})
    _, _, got = decoded(encoder.request([encoder.spans(batch), encoder.spans(batch)]))
    for o, span in zip(batch * 2, got, strict=True):
        expected = spans.span_of(o)
        assert (span.name, as_dict(span.attributes)) == (expected.name, expected.attributes)
        assert len(span.attributes) == len(expected.attributes)
        assert [(e.name, as_dict(e.attributes)) for e in span.events] == [
            (e.name, e.attributes) for e in expected.events
        ]
        assert (span.status.code == Status.StatusCode.STATUS_CODE_ERROR) is expected.failed
        assert span.span_id.hex() == spans.span_id(o.seq)
        assert span.end_time_unix_nano == int(o.start * 1e9) + int(o.duration * 1e9)
        context = traceparent.ids_of(o.raw_traceparent)
        if context is None:
            assert span.parent_span_id == b"" and span.flags == 0x100
        else:
            assert (span.trace_id, span.parent_span_id, span.flags) == (*context, 0x300)


def test_two_encoders_over_the_same_names_write_what_a_fresh_one_does() -> None:
    """What a `Names` keeps of its last plain span is one encoder's: another encoder, taking
    turns with it over the same names, writes each span as an encoder that never saw one."""
    names = Names("echo", "pr-1", "k1", "sandbox", "GET")
    given = {"service": names.service, "sandbox": names.sandbox, "route": names.route,
             "method": names.method, "names": names}  # fmt: skip
    batch = [observed(**given, seq=n, bytes_out=n % 3, status=200 + n % 2) for n in range(12)]
    one, other = SpanEncoder({}), SpanEncoder({})
    turns = [(one if n % 2 else other).span(o) for n, o in enumerate(batch * 2)]
    assert turns == [SpanEncoder({}).span(o) for o in batch * 2]


def test_the_span_ids_bytes_are_the_span_id() -> None:
    """`spans.span_bytes` (native ints below 2**62, `span_halves` past them) is `span_id`."""
    seqs = [*range(5000), *range((1 << 32) - 50, (1 << 32) + 50),
            *range((1 << 62) - 50, (1 << 62) + 50), (1 << 63) + 5, (1 << 64) - 1]  # fmt: skip
    for seq in seqs:
        assert int(spans.span_bytes(seq)).to_bytes(8, "little", signed=True).hex() == (
            spans.span_id(seq)
        )


def reference_ids(raw: bytes) -> tuple[bytes, bytes] | None:
    """Trace Context level 1's reading of a header, written the plain way."""
    text = raw.strip(b" \t")
    if len(text) > 55 and not text.startswith(b"00") and text[55:56] == b"-":
        text = text[:55]  # a later version's first four fields
    found = re.fullmatch(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})", text)
    if found is None or found[1] == b"ff" or found[2] == b"0" * 32 or found[3] == b"0" * 16:
        return None
    return bytes.fromhex(found[2].decode()), bytes.fromhex(found[3].decode())


def test_the_traceparent_is_read_as_trace_context_says_whatever_byte_is_where() -> None:
    """Every byte value in every position of a valid header (the version, the dashes, both
    ids, the flags) is read as the plain reading does, and so is each id's every digit and
    every place for an id's one nonzero byte, uppercase, later versions and whitespace."""
    headers = [f"00-{TRACE}-{PARENT}-01".encode(), b"cc-" + TRACE.encode() + b"-" + b"f" * 16
               + b"-ff"]  # fmt: skip
    for n in range(16):  # an id's one nonzero digit in each place, as each of its values
        for digit in "123456789abcdef":
            headers.append(f"00-{'0' * 31 + digit}-{'0' * n}{digit}{'0' * (15 - n)}-01".encode())
            headers.append(f"00-{'0' * 2 * n}{digit}{'0' * (31 - 2 * n)}-{PARENT}-01".encode())
    many = []
    for header in headers[:2]:
        for at in range(len(header)):
            for byte in range(256):
                many.append(header[:at] + bytes((byte,)) + header[at + 1 :])
    upper = TRACEPARENT.upper().encode()
    many += [upper, upper[:3] + TRACEPARENT.encode()[3:], TRACEPARENT.encode()[:36] + upper[36:]]
    many += [b"cc-" + TRACEPARENT.encode()[3:] + tail for tail in (b"-", b"-x", b"x", b"")]
    many += [TRACEPARENT.encode() + tail for tail in (b"-", b"-x", b" ", b"\t ", b"\n")]
    many += [b" " + TRACEPARENT.encode(), b"f" * 55, b"0" * 55, b"-" * 55, b"", b"00"]
    for raw in headers + many:
        expected = reference_ids(raw)
        assert traceparent.ids_of(raw) == expected, raw
        if len(raw) == traceparent.LENGTH:
            valid, *_ = traceparent.decode(raw)
            assert valid is (expected is not None), raw
    assert len(many) > 100 * 256


def test_a_span_continues_exactly_the_traces_the_header_names() -> None:
    """The encoder's ids are the header's bytes; a header that is not valid starts a trace."""
    raws = [f"00-{'0' * 31}1-{'0' * 15}1-01", f"00-8{'0' * 31}-8{'0' * 15}-01",
            f"00-{'0' * 15}8{'f' * 16}-{'0' * 14}80-01", f"00-{'f' * 32}-{'f' * 16}-01",
            f"00-{'7f' * 16}-{'80' * 8}-01", f"01-{TRACE}-{PARENT}-01-x", TRACEPARENT.upper(),
            f"00-{TRACE}-{PARENT}-0A", f"00-{TRACE}-{PARENT}-01-x", f"00-{TRACE}_{PARENT}-01",
            f"00-{TRACE}-{'0' * 16}-01", f"00-{'0' * 32}-{PARENT}-01", f"ff-{TRACE}-{PARENT}-01",
            f"0g-{TRACE}-{PARENT}-01", f"00-{TRACE[:31]}g-{PARENT}-01",
            f"00-{TRACE}-{PARENT[:15]}:-01", f"00-{TRACE}-{PARENT}-0`"]  # fmt: skip
    batch = [observed(traceparent=None, raw_traceparent=raw.encode(), seq=n)
             for n, raw in enumerate(raws)]  # fmt: skip
    encoder = SpanEncoder({})
    _, _, got = decoded(encoder.request([encoder.spans(batch)]))
    for raw, span in zip(raws, got, strict=True):
        expected = reference_ids(raw.encode())
        if expected is None:
            assert span.parent_span_id == b"" and span.flags == 0x100, raw
            assert len(span.trace_id) == 16 and span.trace_id != bytes(16)
        else:
            assert (span.trace_id, span.parent_span_id, span.flags) == (*expected, 0x300), raw
    assert sum(reference_ids(raw.encode()) is not None for raw in raws) == 6


def test_a_thousand_sandboxes_share_their_span_shapes() -> None:
    """The encoder keeps what every span of a shape has once, not once per sandbox (issue 13's
    memory bar): each sandbox's `sandboxd.sandbox` is composed in, and a baseline span has
    none."""
    encoder = SpanEncoder({})
    batch = [observed(sandbox=f"live-{n % 1000}", service=service, seq=n)
             for n, service in enumerate(["echo", "api", "cluster-mcp"] * 1000)]  # fmt: skip
    batch.append(observed(sandbox="", routing_key="", route=BASELINE, seq=3000))
    _, _, got = decoded(encoder.request([encoder.spans(batch)]))
    assert len(got) == len(batch)
    for o, span in zip(batch, got, strict=True):
        assert as_dict(span.attributes) == spans.span_of(o).attributes
        assert len(span.attributes) == len(spans.span_of(o).attributes)
        assert span.span_id.hex() == spans.span_id(o.seq)
    assert len(encoder._shapes) == 3 + 1  # one per service, and the baseline one


def test_the_resource_is_the_sdks_and_follows_the_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci,team=infra")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    made = encoder({})
    resource, scope, _ = decoded(made.request([made.span(observed())]))
    assert resource["service.name"] == "sandboxd-router"
    assert resource["deployment.environment"] == "ci" and resource["team"] == "infra"
    assert resource["telemetry.sdk.language"] == "python"
    assert scope == "sandboxd_router"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge-router")
    named = encoder({"OTEL_SERVICE_NAME": "edge-router"})
    assert decoded(named.request([]))[0]["service.name"] == "edge-router"


def test_arrays_and_every_scalar_type_encode() -> None:
    attributes = {"s": "x", "b": True, "f": False, "i": -3, "d": 1.5, "a": ("p", "q"), "n": [1, 2]}
    request = ExportTraceServiceRequest.FromString(SpanEncoder(attributes).request([]))
    got = request.resource_spans[0].resource.attributes
    assert {kv.key: kv.value for kv in got} == {
        k: KeyValue(key=k, value=any_value(v)).value for k, v in attributes.items()
    }


def any_value(v: object) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, str):
        return AnyValue(string_value=v)
    assert isinstance(v, tuple | list)
    return AnyValue(array_value=ArrayValue(values=[any_value(item) for item in v]))


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


@pytest.mark.parametrize(
    ("environ", "settings"),
    [
        ({}, Settings("http://localhost:4318/v1/traces")),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, Settings("http://c:4318/v1/traces")),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":
          "https://t/custom"}, Settings("https://t/custom")),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%20b,X-Team=infra, bad",
          "OTEL_EXPORTER_OTLP_TIMEOUT": "2.5", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
          "OTEL_EXPORTER_OTLP_CERTIFICATE": "/ca.pem"},
         Settings("http://localhost:4318/v1/traces", headers={"api-key": "a b", "x-team": "infra"},
                  timeout=2.5, compression="gzip", certificate="/ca.pem")),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "a=1", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2",
          "OTEL_EXPORTER_OTLP_TIMEOUT": "x", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "zstd",
          "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": "/k", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE":
          "/c"},
         Settings("http://localhost:4318/v1/traces", headers={"b": "2"}, client_key="/k",
                  client_certificate="/c")),
    ],
)  # fmt: skip
def test_the_settings_are_the_standard_variables(
    environ: dict[str, str], settings: Settings
) -> None:
    assert Settings.from_env(environ) == settings


@pytest.mark.parametrize(
    ("environ", "batching", "warned"),
    [
        ({}, Batching(delay=1.0, max_queue=8192, batch=2048), ""),
        ({"OTEL_BSP_SCHEDULE_DELAY": "250", "OTEL_BSP_MAX_QUEUE_SIZE": "4096",
          "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512"}, Batching(0.25, 4096, 512), ""),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "100"}, Batching(1.0, 100, 100), "above the queue"),
        ({"OTEL_BSP_SCHEDULE_DELAY": "soon", "OTEL_BSP_MAX_QUEUE_SIZE": "-5",
          "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "0"}, Batching(), "not a positive integer"),
    ],
)  # fmt: skip
def test_the_batching_is_the_batch_span_processors_variables(
    environ: dict[str, str], batching: Batching, warned: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sandboxd_router.telemetry"):
        assert Batching.from_env(environ) == batching
    assert warned in caplog.text if warned else not caplog.text


def test_the_exporter_posts_batches_of_the_size_the_variables_say(collector: Collector) -> None:
    export = from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_port}",
                       "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "30", "OTEL_BSP_MAX_QUEUE_SIZE": "60",
                       "OTEL_BSP_SCHEDULE_DELAY": "50"})  # fmt: skip
    assert export is not None
    try:
        export.add_many([observed(seq=seq) for seq in range(1, 101)])  # 40 find the queue full
        poll.until(lambda: len(collector.spans), lambda n: n == 60, timeout=10, what="60 spans")
    finally:
        export.close()
    assert export.dropped == 40 and export.exported == 60
    assert len(collector.headers) == 2  # two batches of 30


@pytest.mark.parametrize(
    ("environ", "why"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "not an http"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4318",
          "OTEL_EXPORTER_OTLP_CERTIFICATE": "/nowhere/ca.pem"}, "No such file"),
    ],
)  # fmt: skip
def test_an_endpoint_it_cannot_use_turns_spans_off_and_says_why(
    environ: dict[str, str], why: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="sandboxd_router.telemetry"):
        assert from_env(environ) is None
    assert "no spans are exported" in caplog.text and why in caplog.text


def test_off_it_loads_no_sdk() -> None:
    """The telemetry process of a router that does not export stays small (nor does it load
    httpx: its posts go through http.client). (None in sys.modules is an import refused:
    `sandboxd_router` refuses httpx's command-line client.)"""
    code = ("import sys\nfrom sandboxd_router.telemetry import __main__, otlp\n"
            "assert otlp.from_env({}) is None\n"
            "print(sorted(m for m, v in sys.modules.items() if v is not None\n"
            "             and m.startswith(('opentelemetry', 'google', 'httpx'))))")  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


class Collector(http.server.ThreadingHTTPServer):
    """Accepts OTLP/HTTP protobuf posts and keeps the spans (or answers `status`)."""

    def __init__(self, port: int) -> None:
        self.spans: list[Span] = []
        self.headers: list[dict[str, str]] = []
        self.connections: set[int] = set()
        self.status = 200
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Collector
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.headers.append({k.lower(): v for k, v in self.headers.items()})
        self.server.connections.add(self.client_address[1])
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.server.status == 200:
            self.server.spans.extend(decoded(body)[2])
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector(free_port())
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


SETTINGS = ("headers", "compression", "certificate")


def export_to(port: int, *, timeout: float = 2, scheme: str = "http", **more: Any) -> SpanExport:
    settings = Settings(f"{scheme}://127.0.0.1:{port}/v1/traces", timeout=timeout,
                        **{k: v for k, v in more.items() if k in SETTINGS})  # fmt: skip
    rest = {k: v for k, v in more.items() if k not in SETTINGS}
    return SpanExport(
        SpanEncoder({"service.name": "r"}), Poster(settings), **({"delay": 0.05} | rest)
    )


def test_spans_reach_an_otlp_endpoint_in_batches_on_one_connection(collector: Collector) -> None:
    export = export_to(collector.server_port, batch=100, headers={"api-key": "s3cret"},
                       compression="gzip")  # fmt: skip
    for seq in range(1, 1001):
        export.add(observed(seq=seq))
    poll.until(lambda: len(collector.spans), lambda n: n == 1000, timeout=10, what="1000 spans")
    export.close()
    assert sorted(s.span_id.hex() for s in collector.spans) == sorted(
        spans.span_id(seq) for seq in range(1, 1001)
    )
    assert {s.parent_span_id.hex() for s in collector.spans} == {PARENT}
    assert export.exported == 1000 and export.dropped == 0 and export.failed == 0
    assert len(collector.headers) == 10 and len(collector.connections) == 1  # kept alive
    assert {h["api-key"] for h in collector.headers} == {"s3cret"}
    assert {h["content-type"] for h in collector.headers} == {"application/x-protobuf"}


def test_a_batch_goes_in_pieces_each_request_whole_and_as_long_as_it_says(
    collector: Collector,
) -> None:
    """A batch made of a few big reads is sent as those pieces after its head (no copy joins
    them), one of many small reads joined first: either is one request of exactly its
    Content-Length, and the connection carries the next."""
    encoder = SpanEncoder({"service.name": "r"})
    few = [encoder.spans([observed(seq=seq + n) for n in range(300)]) for seq in (0, 300, 600)]
    many = [encoder.span(observed(seq=seq)) for seq in range(1000, 1040)]
    for pieces in (few, many):
        sent = encoder.request_pieces(pieces)
        assert b"".join(sent) == encoder.request(pieces)
        assert len(sent) == (len(pieces) + 1 if pieces is few else 2)
    export = export_to(collector.server_port, batch=900 + 40)
    export.add_many([observed(seq=n) for n in range(900)])
    for seq in range(1000, 1040):
        export.add(observed(seq=seq))
    poll.until(lambda: len(collector.spans), lambda n: n == 940, timeout=10, what="940 spans")
    export.add_many([observed(seq=n) for n in range(2000, 2900)])  # (each read its own piece)
    poll.until(lambda: len(collector.spans), lambda n: n == 1840, timeout=10, what="the rest")
    export.close()
    assert sorted(s.span_id.hex() for s in collector.spans) == sorted(
        spans.span_id(seq) for seq in [*range(900), *range(1000, 1040), *range(2000, 2900)]
    )
    assert len(collector.connections) == 1 and export.failed == 0


def test_through_the_sink_only_sandbox_traffic_and_sampled_baseline(collector: Collector) -> None:
    sink = SpanSink(export_to(collector.server_port), baseline=0.5)
    sink.add(observed(seq=1))
    sink.add(observed(seq=2, service="-"))  # routed nowhere: no span
    low, high = f"00-{'0' * 18}{'1' * 14}-{PARENT}-01", f"00-{'f' * 32}-{PARENT}-01"
    sink.add(observed(seq=3, sandbox="", route=BASELINE, traceparent=low))  # sampled
    sink.add(observed(seq=4, sandbox="", route=BASELINE, traceparent=high))  # not
    poll.until(lambda: len(collector.spans), lambda n: n == 2, timeout=10, what="2 spans")
    sink.export.close()
    assert sorted(s.span_id.hex() for s in collector.spans) == sorted(map(spans.span_id, (1, 3)))


def test_a_read_through_the_sink_keeps_exactly_sandbox_traffic(collector: Collector) -> None:
    """Without a baseline sampled, a read's spans are its requests with a sandbox's key that
    were routed (the read itself when all are)."""
    sink = SpanSink(export_to(collector.server_port))
    every = [observed(seq=n) for n in range(1, 4)]
    assert spans.of_sandboxes(every) is every
    mixed = [observed(seq=4), observed(seq=5, sandbox="", route=BASELINE),
             observed(seq=6, service="-"), observed(seq=7), observed(seq=8, sandbox="")]  # fmt: skip
    assert [o.seq for o in spans.of_sandboxes(mixed)] == [4, 7]
    sink.add_all(every)
    sink.add_all(mixed)
    poll.until(lambda: len(collector.spans), lambda n: n == 5, timeout=10, what="5 spans")
    sink.export.close()
    assert sorted(s.span_id.hex() for s in collector.spans) == sorted(
        map(spans.span_id, (1, 2, 3, 4, 7))
    )


def test_a_dead_endpoint_drops_and_counts_and_never_blocks() -> None:
    dead = free_port()  # nothing listens
    export = export_to(dead, timeout=0.5, max_queue=100)
    for seq in range(1000):  # (a hang here would be the exporter blocking the caller)
        export.add(observed(seq=seq))
    export.close(timeout=2)
    assert export.exported == 0
    assert export.dropped + export.failed == 1000  # every span accounted for
    assert export.dropped >= 1000 - 100  # the queue held at most 100


def test_a_batch_is_a_span_each_or_dropped_whole_when_the_queue_is_full() -> None:
    """The telemetry process hands the sink a whole read of the ring (`add_all`): the same
    spans as one by one; with the queue full (a dead endpoint), the batch's spans are counted
    as dropped at once."""
    dead = free_port()
    export = export_to(dead, timeout=0.5, max_queue=100, batch=10_000, delay=60)
    sink = SpanSink(export)  # (no post is tried before close: the queue stays as filled)
    encoded = encoded_by(export)
    keyed = [observed(seq=seq) for seq in range(150)]
    others = [observed(seq=1000 + n, sandbox="", route=BASELINE) for n in range(50)]
    sink.add_all(keyed + others + [observed(seq=2000, service="-")])
    assert (export._queued, export.dropped) == (100, 50)  # only the sandbox's: 150
    assert encoded == list(range(100))  # (none encoded past a full queue)
    sink.add_all(keyed)
    assert (export._queued, export.dropped) == (100, 200)
    assert len(encoded) == 100  # the whole read dropped without a span made
    export.close(timeout=2)
    assert export.exported == 0 and export.dropped + export.failed == 300


def encoded_by(export: SpanExport) -> list[int]:
    """The `seq` of every span `export` encodes from now on."""
    encoded: list[int] = []
    spans_of = export._spans

    def counted(batch: list[Observed]) -> bytes:
        encoded.extend(o.seq for o in batch)
        return spans_of(batch)

    export._spans = counted
    return encoded


def test_a_read_is_encoded_at_once_as_the_same_spans_in_posts_of_at_most_a_batch(
    collector: Collector,
) -> None:
    export = export_to(collector.server_port, batch=300)
    SpanSink(export).add_all([observed(seq=seq) for seq in range(1, 1001)])  # one read
    poll.until(lambda: len(collector.spans), lambda n: n == 1000, timeout=10, what="1000 spans")
    export.close()
    assert sorted(s.span_id.hex() for s in collector.spans) == sorted(
        spans.span_id(seq) for seq in range(1, 1001)
    )
    assert len(collector.headers) == 4  # 300, 300, 300, 100
    assert all(s.name == "POST" and s.parent_span_id.hex() == PARENT for s in collector.spans)


def test_while_the_endpoint_is_down_no_span_is_encoded_until_it_answers_again() -> None:
    port = free_port()  # nothing listens yet
    export = export_to(port, timeout=30)
    export.add(observed(seq=1))
    # known at the first refused attempt, while that batch waits to be tried again
    poll.until(lambda: export.down, timeout=10, what="the endpoint known to be down")
    encoded = encoded_by(export)
    SpanSink(export).add_all([observed(seq=seq) for seq in range(2, 502)])
    assert encoded == [] and export.dropped == 500  # counted, none encoded
    server = Collector(port)  # the endpoint is back: the retried batch finds it
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        poll.until(lambda: export.down, lambda down: not down, timeout=20, what="up again")
        export.add(observed(seq=600))
        poll.until(lambda: export.exported, lambda n: n == 2, timeout=10, what="2 spans")
        export.close()
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(s.span_id.hex() for s in server.spans) == sorted(map(spans.span_id, (1, 600)))
    assert encoded == [600] and (export.failed, export.dropped) == (0, 500)


def test_a_dead_endpoint_is_asked_with_an_empty_request_until_it_answers() -> None:
    port = free_port()
    export = export_to(port, timeout=0.2)
    export.add(observed(seq=1))
    poll.until(lambda: export.failed, timeout=10, what="the batch given up")
    assert export.down
    server = Collector(port)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        poll.until(lambda: export.down, lambda down: not down, timeout=10, what="up again")
        export.close()
    finally:
        server.shutdown()
        server.server_close()
    assert server.headers and server.spans == []  # (an empty request found it)
    assert (export.exported, export.failed) == (0, 1)


def test_a_refusing_endpoint_counts_failed_batches(collector: Collector) -> None:
    collector.status = 400  # not retried
    export = export_to(collector.server_port)
    export.add(observed())
    poll.until(lambda: export.failed, timeout=10, what="a failed batch")
    export.close()
    assert export.failed == 1 and export.exported == 0 and len(collector.headers) == 1


def test_an_overloaded_endpoint_is_asked_again(collector: Collector) -> None:
    collector.status = 503  # retried after a backoff, within the timeout
    export = export_to(collector.server_port, timeout=5)
    export.add(observed())
    poll.until(lambda: len(collector.headers), lambda n: n >= 1, timeout=10, what="a first post")
    collector.status = 200
    poll.until(lambda: export.exported, timeout=10, what="the batch, posted again")
    export.close()
    assert export.failed == 0 and len(collector.spans) == 1 and len(collector.headers) == 2


def test_https_trusts_the_configured_certificate(collector: Collector, tmp_path: Path) -> None:
    certificate, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certificate, key)
    collector.socket = tls.wrap_socket(collector.socket, server_side=True)
    trusting = export_to(collector.server_port, scheme="https", certificate=str(certificate))
    trusting.add(observed())
    poll.until(lambda: trusting.exported, timeout=10, what="a span over https")
    trusting.close()
    stranger = export_to(collector.server_port, scheme="https", timeout=0.5)  # system CAs only
    stranger.add(observed())
    poll.until(lambda: stranger.failed, timeout=10, what="a batch refused by TLS")
    stranger.close()
    assert len(collector.spans) == 1 and stranger.exported == 0


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file
