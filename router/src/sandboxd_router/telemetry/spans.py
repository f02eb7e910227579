"""A request as a span: its name, kind, attributes and events, by the OpenTelemetry semantic
conventions (stable HTTP server spans; the MCP conventions for `mcp` services), plus the
router's own `sandboxd.*` attributes. Pure: the request records sent to the control plane and
the OTLP exporter both build their spans from this.

The router's span is one HTTP exchange it proxied, so it is a SERVER span named the HTTP way
(`{method}`: the router knows no route template) unless the exchange was an MCP call, which is
named the MCP way (`{mcp.method.name} {tool}`, or `{mcp.method.name}`) because that is what a
reader looks for in a trace of an agent.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Final, NamedTuple

from mypy_extensions import i64

from sandboxd_router.telemetry.observed import HTTP_5XX, JSONRPC, Observed

SERVER: Final = "server"  # the span kind (the exporter maps it to the SDK's SpanKind)
FAULT_EVENT: Final = "sandboxd.fault.injected"
TOOL_CALL: Final = "tools/call"
# the MCP revisions with sessions (none named: before 2025-06-18, which sends no version
# header); 2026-07-28 has none and forbids `mcp.session.id`, as would an unknown one
SESSIONFUL: Final = frozenset((None, "2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"))

# RFC 9110's methods, PATCH (RFC 5789) and QUERY (known to the conventions since v1.44);
# any other is `_OTHER`, the span then named "HTTP" (a method is case-sensitive: "get" is other)
KNOWN_METHODS: Final = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE")
)

Attribute = str | int | float | bool
Attributes = dict[str, Attribute]


class Event(NamedTuple):
    name: str
    time: float
    """Epoch seconds."""
    attributes: Attributes


class Span(NamedTuple):
    name: str
    kind: str
    attributes: Attributes
    events: list[Event]

    @property
    def failed(self) -> bool:
        """The span's status is ERROR exactly when `error.type` is set (both conventions)."""
        return "error.type" in self.attributes


def of_sandboxes(batch: list[Observed]) -> list[Observed]:
    """The requests of `batch` that carried a sandbox's key and were routed to a service: the
    ones that are always a span (`batch` itself when all are: no list is made)."""
    for o in batch:
        if not o.sandbox or o.service == "-":
            return [o for o in batch if o.sandbox and o.service != "-"]
    return batch


def span_of(observed: Observed) -> Span:
    name, attributes = _shaped(observed)
    # (`VARYING`'s, unrolled: compiled, a zip over two tuples is a generic iteration)
    path, size_in, size_out, rpc_id, session = varying(observed)
    if path is not None:
        attributes[VARYING[0]] = path
    attributes[VARYING[1]] = size_in
    attributes[VARYING[2]] = size_out
    if rpc_id is not None:  # (a null or absent request id: left out)
        attributes[VARYING[3]] = rpc_id
    if session is not None:
        attributes[VARYING[4]] = session
    return Span(name, SERVER, attributes, _events(observed))


# What an encoder may cache: the name, the kind, the status and every attribute but the
# `VARYING` ones depend only on `shape(observed)`, as the events do but for their time
# (`fault_time`).
VARYING: Final = (
    "url.path",
    "http.request.body.size",
    "http.response.body.size",
    "jsonrpc.request.id",
    "mcp.session.id",
)

Shape = tuple[object, ...]


def shape(o: Observed) -> Shape:
    """The fields every part of a span but the `VARYING` attributes, `sandboxd.sandbox` and the
    events' time is made of: what an encoder keys its cached pieces by. Without the sandbox,
    so that a thousand sandboxes share their shapes (each encoder composes the sandbox in).
    A request with no fault and no MCP field (most) is keyed by the five fields its span has;
    a five-field key never equals a ten-field one."""
    if (o.faults or o.rpc_method is not None or o.tool is not None or o.protocol is not None
            or o.rpc_code is not None):  # fmt: skip
        return (o.service, o.route, o.method, o.status, o.error, o.faults, o.rpc_method,
                o.tool, o.protocol, o.rpc_code)  # fmt: skip
    return (o.service, o.route, o.method, o.status, o.error)


def varying(o: Observed) -> tuple[str | None, int, int, str | None, str | None]:
    """The values of the `VARYING` attributes (None: that attribute left out). The path is the
    record's (its first `record.PATH` bytes, never the query); the session id only for MCP
    revisions that have sessions (the 2026-07-28 one forbids the attribute)."""
    if o.rpc_method is None:
        return o.path or None, o.bytes_in, o.bytes_out, None, None
    sessionful = o.protocol in SESSIONFUL
    return (o.path or None, o.bytes_in, o.bytes_out, request_id(o.rpc_id),
            o.session if sessionful else None)  # fmt: skip


def _shaped(o: Observed) -> tuple[str, Attributes]:
    """The span's name and its attributes but the `VARYING` ones, from `shape(o)` alone."""
    # `server.address` (recommended) is not in the request path's record
    attributes: Attributes = {"url.scheme": "http"}
    method = _method(o.method, attributes)
    if o.status:
        attributes["http.response.status_code"] = o.status
    if o.error:
        attributes["error.type"] = error_type(o)
    if o.sandbox:  # baseline traffic (sampled for export) carries no sandbox's key
        attributes["sandboxd.sandbox"] = o.sandbox
    attributes["sandboxd.route"] = o.route
    attributes["sandboxd.service"] = o.service
    if o.faults:
        # scalars only on the wire: several faults (rare) are named comma-separated
        attributes["sandboxd.fault.kind"] = ",".join(f.kind for f in o.faults)
        attributes["sandboxd.fault.id"] = ",".join(f.id for f in o.faults)
    name = method
    if o.rpc_method is not None:
        name = _mcp(o, attributes)
    return name, attributes


def error_type(observed: Observed) -> str:
    """The outcome: the status code for a 5xx (the HTTP conventions), a JSON-RPC error's code
    (the MCP and JSON-RPC conventions; `jsonrpc` when it could not be read), else the outcome
    class (`tool_error` is also the MCP conventions' value for an `isError` result)."""
    if observed.error == HTTP_5XX and observed.status:
        return str(observed.status)
    if observed.error == JSONRPC and observed.rpc_code is not None:
        return str(observed.rpc_code)
    return observed.error


def _method(method: str, attributes: Attributes) -> str:
    """Sets `http.request.method` and answers the span name the HTTP conventions give it."""
    if method in KNOWN_METHODS:
        attributes["http.request.method"] = method
        return method
    attributes["http.request.method"] = "_OTHER"
    attributes["http.request.method_original"] = method
    return "HTTP"


def _mcp(o: Observed, attributes: Attributes) -> str:
    """Sets the MCP attributes and answers the MCP span name."""
    assert o.rpc_method is not None
    attributes["mcp.method.name"] = o.rpc_method
    if o.protocol is not None:
        attributes["mcp.protocol.version"] = o.protocol
    if o.rpc_code is not None:
        attributes["rpc.response.status_code"] = str(o.rpc_code)
    if o.tool is None:
        return o.rpc_method
    attributes["gen_ai.tool.name"] = o.tool
    if o.rpc_method == TOOL_CALL:
        attributes["gen_ai.operation.name"] = "execute_tool"
    return f"{o.rpc_method} {o.tool}"


def request_id(text: str | None) -> str | None:
    """`jsonrpc.request.id` from the id's JSON text: a string id without its quotes, a number
    as written; none for a null id (the conventions leave it out). A truncated string id is
    kept as far as it goes."""
    if text is None or text == "null":
        return None
    if not text.startswith('"'):
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text[1:]
    if not isinstance(value, str):
        return text
    if not value.isascii():
        try:  # a lone surrogate ("\ud800") decodes, but no UTF-8 encoder takes it
            value.encode()
        except UnicodeEncodeError:
            return text[1:-1]  # the escaped form, as sent
    return value


def _events(o: Observed) -> list[Event]:
    """One `sandboxd.fault.injected` per fault applied, at the moment the (last) fault took
    effect: the only moment the request path records."""
    if not o.faults:
        return []
    at = fault_time(o)
    return [
        Event(FAULT_EVENT, at, {"sandboxd.fault.kind": f.kind, "sandboxd.fault.id": f.id})
        for f in o.faults
    ]


def fault_time(o: Observed) -> float:
    """When the faults' events happened (epoch seconds)."""
    return o.start + o.injected_at


_M32: Final = 0xFFFFFFFF
_I32_MAX: Final = 0x7FFFFFFF
_WRAP: Final = 1 << 32
_M30: Final = 0x3FFFFFFF
_NATIVE: Final = (1 << 62) - 1  # (the largest int mypyc holds unboxed)
# two Feistel rounds' keys and multipliers, drawn per process. Compiled, a product is machine
# arithmetic only when both factors are under 2**30 (mypyc's check is that conservative), so
# the round function multiplies 30 bits of a half by a 30-bit number: past that, or past
# mypyc's 62-bit ints, every operation would make an object.
_KEY1: Final = int.from_bytes(os.urandom(4), "big")
_KEY2: Final = int.from_bytes(os.urandom(4), "big")
_MUL1: Final = int.from_bytes(os.urandom(4), "big") >> 2 | 1
_MUL2: Final = int.from_bytes(os.urandom(4), "big") >> 2 | 1
HALVES: Final = struct.Struct("<II")
"""A span id's 8 bytes: `span_halves`, the first four then the last four."""


def span_id(seq: int) -> str:
    """The router's span id for the ring's record `seq` (16 hex): the same in every sink (the
    control plane's traces and the OTLP export agree)."""
    first, last = span_halves(seq)
    return HALVES.pack(first, last).hex()


def span_bytes(seq: int) -> i64:
    """`span_id(seq)`'s 8 bytes as one signed little-endian number (what the OTLP encoder
    writes). `span_halves` in native ints for the numbers a ring reaches (below 2**62: every
    product and xor fits in an i64), no object made."""
    if not 0 <= seq <= _NATIVE:
        first, last = span_halves(seq)
        if last > _I32_MAX:  # (its high bit the sign: the same 8 bytes)
            last -= _WRAP
        return i64(first) | i64(last) * 0x100000000
    n = i64(seq)
    high = (n >> 32) ^ (((n & _M30) * i64(_MUL1)) >> 14 & _M32) ^ i64(_KEY1)
    low = (n & _M32) ^ (((high & _M30) * i64(_MUL2)) >> 14 & _M32) ^ i64(_KEY2)
    if high == 0 and low == 0:  # all-zero is not a span id
        return 1
    if high > _I32_MAX:
        high -= _WRAP
    return low | high * 0x100000000


def span_halves(seq: int) -> tuple[int, int]:
    """`span_id(seq)`'s 8 bytes as two little-endian 32-bit numbers. Two Feistel rounds over
    the halves of `seq` (below 2**64):
    one-to-one whatever the round function, so unique within this process, and, keyed at
    random per process, unlikely to repeat across processes."""
    high = (seq >> 32) ^ (((seq & _M30) * _MUL1) >> 14 & _M32) ^ _KEY1
    low = (seq & _M32) ^ (((high & _M30) * _MUL2) >> 14 & _M32) ^ _KEY2
    if high == 0 and low == 0:  # all-zero is not a span id
        return 1, 0
    return low, high
