"""A request record as the control plane stores it (`POST /v1/router-signals`, `requests`):
the request, its place in a trace and its span, for the requests that carried a sandbox's
key. Built when it is sent, not when the request is seen: `add` stays cheap, and a record
dropped before it is sent (the control plane down too long) costs nothing."""

from __future__ import annotations

from sandboxd_router.telemetry import spans, traceparent
from sandboxd_router.telemetry.observed import Observed
from sandboxd_router.telemetry.request_wire import RecordText, request_wire


def wire_of(seq: int, o: Observed) -> dict[str, object]:
    span = spans.span_of(o)
    return request_wire(
        seq,
        o,
        context=traceparent.parse(o.traceparent),
        span_id=spans.span_id(o.seq),  # (made here: most records are never sent)
        name=span.name,
        attributes=span.attributes,
        events=_events(span),
    )


def texts(batch: list[tuple[int, Observed]], text: RecordText) -> list[bytes]:
    """`wire_of` of each (number, request) as JSON (the same objects, without dicts), with a
    comma between two: the pieces of a post's `requests` list."""
    return text.texts(batch)


def _events(span: spans.Span) -> list[dict[str, object]]:
    return [{"name": e.name, "time": e.time, "attributes": e.attributes} for e in span.events]
