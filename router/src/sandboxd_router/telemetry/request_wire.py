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

from orjson import dumps  # (a module global: no attribute lookup a call)

from sandboxd_router.telemetry.observed import Observed
from sandboxd_router.telemetry.spans import VARYING, Shape, Span, shape, span_id, span_of, varying
from sandboxd_router.telemetry.thousandths import round3, text3
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
        self._quoted: dict[str, str] = {}
        self._shapes: dict[Shape, tuple[str, str, str, str]] = {}
        """`spans.shape(o)` → the span's name and its attributes but the `VARYING` ones and the
        sandbox's, as JSON: those before `sandboxd.sandbox` (left open) and those after it;
        and the record's `"service":…,"route":…,`. Keyed by what no sandbox has of its own, so
        that a thousand sandboxes share a shape; the sandbox's name (in `_quoted`) goes between
        the two when a record is written."""

    def texts(self, batch: list[tuple[int, Observed]]) -> list[bytes]:
        """`text` of each (number, request): one call for a whole post's records; encoded, with
        a comma between two, for one `b"".join` of the whole body (not a copy per step)."""
        out: list[bytes] = []
        for seq, o in batch:
            if out:
                out.append(b",")
            out.append(self.text(seq, o).encode())
        return out

    def text(self, seq: int, o: Observed) -> str:
        """`wire_of`'s dict as orjson writes it. (The trace context's ids and the span id are
        lowercase hex: `traceparent.parse` matched them, `spans.span_id` made them.)"""
        q = self.quoted
        sandbox = q(o.sandbox)
        name, attributes, events, place = self._span(o, sandbox)
        trace, parent = _context(o)
        faults = "[]"
        if o.faults:
            faults = ",".join(f'{{"kind":{q(f.kind)},"id":{q(f.id)}}}' for f in o.faults)
            faults = "[" + faults + "]"
        mcp = ',"rpcMethod":null,"tool":null,"rpcId":null'
        if o.rpc_method is not None or o.tool is not None or o.rpc_id is not None:
            rpc_id = "null" if o.rpc_id is None else dumps(o.rpc_id).decode()
            mcp = f',"rpcMethod":{q(o.rpc_method)},"tool":{q(o.tool)},"rpcId":{rpc_id}'
        return (
            f'{{"seq":{seq},"sandbox":{sandbox},"routingKey":{q(o.routing_key)},'
            f"{place}"
            f'"start":{dumps(o.end - o.duration).decode()},'
            f'"durationMs":{text3(o.duration * 1000)},'
            f'"method":{q(o.method)},"status":{o.status},"bytesIn":{o.bytes_in},'
            f'"bytesOut":{o.bytes_out},"error":{q(o.error or None)},'
            f'"injected":{"true" if o.injected else "false"},"faults":{faults},'
            f'"traceId":{trace},"spanId":"{span_id(o.seq)}","parentSpanId":{parent}{mcp},'
            f'"name":{name},"attributes":{attributes},"events":{events}}}'
        )

    def _span(self, o: Observed, sandbox: str) -> tuple[str, str, str, str]:
        """The span's name, attributes and events as JSON, and the record's service and route;
        what depends on `spans.shape(o)` alone (every attribute but the `VARYING` ones, which
        `span_of` adds last, and the sandbox's `sandboxd.sandbox`, `sandbox` quoted) made
        once."""
        if o.faults:  # (rare: the events' time varies)
            span = span_of(o)
            events = _events(span)
            return (self.quoted(span.name), dumps(span.attributes).decode(),
                    dumps(events).decode() if events else "[]", self._place(o))  # fmt: skip
        key = shape(o)
        known = self._shapes.get(key)
        if known is None:
            known = self._learn(o)
            if len(self._shapes) >= QUOTED:
                self._shapes.clear()
            self._shapes[key] = known
        name, before, after, place = known
        if o.sandbox:  # (`spans._shaped` leaves it out for baseline traffic)
            attributes = f'{before},"sandboxd.sandbox":{sandbox},{after}'
        else:
            attributes = f"{before},{after}"
        path, size_in, size_out, rpc_id, session = varying(o)
        if path is not None:
            attributes = f'{attributes},"url.path":{dumps(path).decode()}'
        attributes = (
            f'{attributes},"http.request.body.size":{size_in},"http.response.body.size":{size_out}'
        )
        if rpc_id is not None:
            attributes = f'{attributes},"jsonrpc.request.id":{dumps(rpc_id).decode()}'
        if session is not None:
            attributes = f'{attributes},"mcp.session.id":{dumps(session).decode()}'
        return name, attributes + "}", "[]", place

    def _learn(self, o: Observed) -> tuple[str, str, str, str]:
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
        return (self.quoted(span.name), dumps(before).decode()[:-1],
                dumps(after).decode()[1:-1], self._place(o))  # fmt: skip

    def _place(self, o: Observed) -> str:
        """`"service":…,"route":…,`."""
        return f'"service":{self.quoted(o.service)},"route":{self.quoted(o.route)},'

    def quoted(self, name: str | None) -> str:
        """A name as a JSON string (null for None), escaped once."""
        if name is None:
            return "null"
        text = self._quoted.get(name)
        if text is None:
            if len(self._quoted) >= QUOTED:  # (sandboxes come and go: start afresh, rarely)
                self._quoted.clear()
            text = self._quoted[name] = dumps(name).decode()
        return text


NULLS: Final = ("null", "null")


def _context(o: Observed) -> tuple[str, str]:
    """`parse(o.traceparent)`'s trace and parent span ids as JSON (nulls for none), cut out of
    the header's valid fields (lowercase hex already: nothing decoded and encoded again)."""
    fields = fields_of(o.raw_traceparent) if o.tp_len else header_fields(o.traceparent)
    if fields is None:
        return NULLS
    return f'"{fields[3:35].decode()}"', f'"{fields[36:52].decode()}"'
