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
from sandboxd_router.telemetry.traceparent import parse

QUOTED: Final = 100_000  # names' JSON texts kept (services, sandboxes, keys, methods, tools;
# span shapes)


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
        self._heads: dict[tuple[str, str, str, str], str] = {}
        self._shapes: dict[Shape, tuple[str, str]] = {}
        """`spans.shape` → the span's name and its attributes but the `VARYING` ones, as JSON
        (left open)."""

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
        name, attributes, events = self._span(o)
        context = parse(o.traceparent)
        q = self.quoted
        trace, parent = (f'"{context[0]}"', f'"{context[1]}"') if context else NULLS
        faults = "[]"
        if o.faults:
            faults = ",".join(f'{{"kind":{q(f.kind)},"id":{q(f.id)}}}' for f in o.faults)
            faults = "[" + faults + "]"
        mcp = ',"rpcMethod":null,"tool":null,"rpcId":null'
        if o.rpc_method is not None or o.tool is not None or o.rpc_id is not None:
            rpc_id = "null" if o.rpc_id is None else dumps(o.rpc_id).decode()
            mcp = f',"rpcMethod":{q(o.rpc_method)},"tool":{q(o.tool)},"rpcId":{rpc_id}'
        return (
            f'{{"seq":{seq},{self._head(o)}'
            f'"start":{dumps(o.end - o.duration).decode()},'
            f'"durationMs":{text3(o.duration * 1000)},'
            f'"method":{q(o.method)},"status":{o.status},"bytesIn":{o.bytes_in},'
            f'"bytesOut":{o.bytes_out},"error":{q(o.error or None)},'
            f'"injected":{"true" if o.injected else "false"},"faults":{faults},'
            f'"traceId":{trace},"spanId":"{span_id(o.seq)}","parentSpanId":{parent}{mcp},'
            f'"name":{name},"attributes":{attributes},"events":{events}}}'
        )

    def _span(self, o: Observed) -> tuple[str, str, str]:
        """The span's name, attributes and events as JSON; what depends on `spans.shape` alone
        (every attribute but the `VARYING` ones, which `span_of` adds last) made once."""
        if o.faults:  # (rare: the events' time varies)
            span = span_of(o)
            events = _events(span)
            return (self.quoted(span.name), dumps(span.attributes).decode(),
                    dumps(events).decode() if events else "[]")  # fmt: skip
        key = shape(o)
        known = self._shapes.get(key)
        if known is None:
            span = span_of(o)
            fixed = {k: v for k, v in span.attributes.items() if k not in VARYING}
            known = (self.quoted(span.name), dumps(fixed).decode()[:-1])  # (open: "url.scheme")
            if len(self._shapes) >= QUOTED:
                self._shapes.clear()
            self._shapes[key] = known
        name, attributes = known
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
        return name, attributes + "}", "[]"

    def _head(self, o: Observed) -> str:
        """`"sandbox":…,"routingKey":…,"service":…,"route":…`, made once per group."""
        group = (o.sandbox, o.routing_key, o.service, o.route)
        head = self._heads.get(group)
        if head is None:
            q = self.quoted
            head = (
                f'"sandbox":{q(o.sandbox)},"routingKey":{q(o.routing_key)},'
                f'"service":{q(o.service)},"route":{q(o.route)},'
            )
            if len(self._heads) >= QUOTED:
                self._heads.clear()
            self._heads[group] = head
        return head

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
