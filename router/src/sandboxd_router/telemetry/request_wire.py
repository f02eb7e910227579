"""A request record as the control plane stores it (`POST /v1/router-signals`, `requests`):
the request, its place in a trace and its span, for the requests that carried a sandbox's
key. Built when it is sent, not when the request is seen: `add` stays cheap, and a record
dropped before it is sent (the control plane down too long) costs nothing. Compiled
(`native.HOT`, as `spans` and `traceparent`, which it calls).

`RecordText` writes the record as JSON text directly, the same object orjson makes of
`wire_of`'s dict (the names that repeat from one record to the next escaped once): a report
encodes up to `MAX_PENDING` of them a second (`signals`).
"""

from __future__ import annotations

from typing import Final

from librt.strings import BytesWriter
from orjson import dumps  # (a module global: no attribute lookup a call)

from sandboxd_router.telemetry.observed import Observed
from sandboxd_router.telemetry.spans import VARYING, Shape, Span, shape, span_id, span_of, varying
from sandboxd_router.telemetry.thousandths import kept_json, round3, text3
from sandboxd_router.telemetry.traceparent import fields as header_fields
from sandboxd_router.telemetry.traceparent import fields_of, parse

QUOTED: Final = 100_000  # names' JSON texts kept (services, sandboxes, keys, methods, tools;
# span shapes)


SANDBOX: Final = "sandboxd.sandbox"
ROUTE: Final = "sandboxd.route"


def wire_of(seq: int, o: Observed) -> dict[str, object]:
    span = span_of(o)
    context = parse(o.traceparent)
    return {
        "seq": seq,
        "sandbox": o.sandbox,
        "routingKey": o.routing_key,
        "service": o.service,
        "route": o.route,
        "start": o.end - o.duration,
        "durationMs": round3(o.duration * 1000),
        "method": o.method,
        "status": o.status,
        "bytesIn": o.bytes_in,
        "bytesOut": o.bytes_out,
        "error": o.error or None,
        "injected": o.injected,
        "faults": [{"kind": f.kind, "id": f.id} for f in o.faults],
        "traceId": context[0] if context is not None else None,
        "spanId": span_id(o.seq),  # (made here: most records are never sent)
        "parentSpanId": context[1] if context is not None else None,
        "rpcMethod": o.rpc_method,
        "tool": o.tool,
        "rpcId": o.rpc_id,
        "name": span.name,
        "attributes": span.attributes,
        "events": _events(span),
    }


def _events(span: Span) -> list[dict[str, object]]:
    return [{"name": e.name, "time": e.time, "attributes": e.attributes} for e in span.events]


class RecordText:
    def __init__(self) -> None:
        self._quoted: dict[str, bytes] = {}
        self._shapes: dict[Shape, tuple[bytes, bytes, bytes, bytes]] = {}
        """`spans.shape(o)` → the span's name and its attributes but the `VARYING` ones and the
        sandbox's, as JSON: those before `sandboxd.sandbox` (left open) and those after it;
        and the record's `"service":…,"route":…,`. Keyed by what no sandbox has of its own, so
        that a thousand sandboxes share a shape; the sandbox's name (in `_quoted`) goes between
        the two when a record is written."""
        self._out = BytesWriter()
        """Where a record is written, piece by piece (emptied for each)."""

    def texts(self, batch: list[tuple[int, Observed]]) -> list[bytes]:
        """`text` of each (number, request): one call for a whole post's records, with a comma
        between two, for one `b"".join` of the whole body (not a copy per step)."""
        out: list[bytes] = []
        for seq, o in batch:
            if out:
                out.append(b",")
            out.append(self.text(seq, o))
        return out

    def text(self, seq: int, o: Observed) -> bytes:
        """`wire_of`'s dict as orjson writes it, written straight as bytes: the names escaped
        once, the pieces copied one after the other into one buffer. (The trace context's ids
        and the span id are lowercase hex: `traceparent.fields_of` checked them,
        `spans.span_id` made them.)"""
        q = self.quoted
        out = self._out
        out.truncate(0)
        sandbox = q(o.sandbox)
        span: Span | None = None
        if o.faults:  # (rare: not cached, the events' time varies)
            span = span_of(o)
            name, before, after, place = q(span.name), b"", b"", self._place(o)
        else:
            name, before, after, place = self._shape(o)
        out.write(b'{"seq":')
        out.write(str(seq).encode())
        out.write(b',"sandbox":')
        out.write(sandbox)
        out.write(b',"routingKey":')
        out.write(q(o.routing_key))
        out.append(_COMMA)
        out.write(place)
        out.write(b'"start":')
        out.write(dumps(o.end - o.duration))
        out.write(b',"durationMs":')
        out.write(text3(o.duration * 1000).encode())
        out.write(b',"method":')
        out.write(q(o.method))
        out.write(b',"status":')
        out.write(str(o.status).encode())
        out.write(b',"bytesIn":')
        out.write(str(o.bytes_in).encode())
        out.write(b',"bytesOut":')
        out.write(str(o.bytes_out).encode())
        out.write(b',"error":')
        out.write(q(o.error) if o.error else b"null")
        out.write(b',"injected":true,"faults":' if o.injected else b',"injected":false,"faults":')
        if o.faults:
            faults = [b'{"kind":%b,"id":%b}' % (q(f.kind), q(f.id)) for f in o.faults]
            out.write(b"[" + b",".join(faults) + b"]")
        else:
            out.write(b"[]")
        fields = fields_of(o.raw_traceparent) if o.tp_len else header_fields(o.traceparent)
        if fields is None:
            out.write(b',"traceId":null,"spanId":"')
        else:
            out.write(b',"traceId":"')
            out.write(fields[3:35])
            out.write(b'","spanId":"')
        out.write(span_id(o.seq).encode())
        if fields is None:
            out.write(b'","parentSpanId":null')
        else:
            out.write(b'","parentSpanId":"')
            out.write(fields[36:52])
            out.append(_QUOTE)
        if o.rpc_method is not None or o.tool is not None or o.rpc_id is not None:
            out.write(b',"rpcMethod":')
            out.write(q(o.rpc_method))
            out.write(b',"tool":')
            out.write(q(o.tool))
            out.write(b',"rpcId":')
            out.write(b"null" if o.rpc_id is None else dumps(o.rpc_id))
        else:
            out.write(b',"rpcMethod":null,"tool":null,"rpcId":null')
        out.write(b',"name":')
        out.write(name)
        out.write(b',"attributes":')
        if span is not None:
            events = _events(span)
            out.write(dumps(span.attributes))
            out.write(b',"events":')
            out.write(dumps(events) if events else b"[]")
            out.write(b"}")
            return out.getvalue()
        out.write(before)
        if o.sandbox:  # (`spans._shaped` leaves it out for baseline traffic)
            out.write(b',"sandboxd.sandbox":')
            out.write(sandbox)
        out.append(_COMMA)
        out.write(after)
        path, size_in, size_out, rpc_id, session = varying(o)
        if path is not None:
            out.write(b',"url.path":')
            out.write(dumps(path))
        out.write(b',"http.request.body.size":')
        out.write(str(size_in).encode())
        out.write(b',"http.response.body.size":')
        out.write(str(size_out).encode())
        if rpc_id is not None:
            out.write(b',"jsonrpc.request.id":')
            out.write(dumps(rpc_id))
        if session is not None:
            out.write(b',"mcp.session.id":')
            out.write(dumps(session))
        out.write(b'},"events":[]}')
        return out.getvalue()

    def _shape(self, o: Observed) -> tuple[bytes, bytes, bytes, bytes]:
        """The span's name and its fixed attributes as JSON, split around the sandbox's
        (`_shapes`), and the record's service and route: what depends on `spans.shape(o)`
        alone (every attribute but the `VARYING` ones, which `span_of` adds last, and the
        sandbox's), made once."""
        key = shape(o)
        known = self._shapes.get(key)
        if known is None:
            known = self._learn(o)
            if len(self._shapes) >= QUOTED:
                self._shapes.clear()
            self._shapes[key] = known
        return known

    def _learn(self, o: Observed) -> tuple[bytes, bytes, bytes, bytes]:
        """`_shapes`' entry for `o`: the fixed attributes split around `sandboxd.sandbox`
        (`spans._shaped` sets it just before `sandboxd.route`, which it always sets)."""
        span = span_of(o)
        before: dict[str, object] = {}
        after: dict[str, object] = {}
        part = before
        for k, v in span.attributes.items():
            if k == ROUTE:
                part = after
            if k != SANDBOX and k not in VARYING:
                part[k] = v
        # open on both sides: before ends at `http.request.method` or later, after starts at
        # `sandboxd.route`
        return (self.quoted(span.name), dumps(before)[:-1], dumps(after)[1:-1],
                self._place(o))  # fmt: skip

    def _place(self, o: Observed) -> bytes:
        """`"service":…,"route":…,`."""
        return b'"service":%b,"route":%b,' % (self.quoted(o.service), self.quoted(o.route))

    def quoted(self, name: str | None) -> bytes:
        """A name as a JSON string (null for None), escaped once."""
        if name is None:
            return b"null"
        text = self._quoted.get(name)
        if text is None:
            if len(self._quoted) >= QUOTED:  # (sandboxes come and go: start afresh, rarely)
                self._quoted.clear()
            text = self._quoted[name] = kept_json(name)
        return text


_COMMA: Final = 0x2C
_QUOTE: Final = 0x22
