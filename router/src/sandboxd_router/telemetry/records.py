"""A request record as the control plane stores it (`POST /v1/router-signals`, `requests`):
the request, its place in a trace and its span, for the requests that carried a sandbox's
key. Built when it is sent, not when the request is seen: `add` stays cheap, and a record
dropped before it is sent (the control plane down too long) costs nothing."""

from __future__ import annotations

from typing import NamedTuple

from sandboxd_router.telemetry import spans, traceparent
from sandboxd_router.telemetry.observed import Observed


class Pending(NamedTuple):
    seq: int
    """Per instance, strictly increasing: the control plane inserts (instance, seq) once."""
    observed: Observed


def wire(record: Pending) -> dict[str, object]:
    o = record.observed
    context = traceparent.parse(o.traceparent)
    span = spans.span_of(o)
    return {
        "seq": record.seq,
        "sandbox": o.sandbox,
        "routingKey": o.routing_key,
        "service": o.service,
        "route": o.route,
        "start": o.start,
        "durationMs": round(o.duration * 1000, 3),
        "method": o.method,
        "status": o.status,
        "bytesIn": o.bytes_in,
        "bytesOut": o.bytes_out,
        "error": o.error or None,
        "injected": o.injected,
        "faults": [{"kind": f.kind, "id": f.id} for f in o.faults],
        "traceId": context[0] if context else None,
        "spanId": spans.span_id(o.seq),  # (made here: most records are never sent)
        "parentSpanId": context[1] if context else None,
        "rpcMethod": o.rpc_method,
        "tool": o.tool,
        "rpcId": o.rpc_id,
        "name": span.name,
        "attributes": span.attributes,
        "events": [
            {"name": e.name, "time": e.time, "attributes": e.attributes} for e in span.events
        ],
    }
