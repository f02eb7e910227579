"""The router's spans as OTLP/protobuf (`ExportTraceServiceRequest` of opentelemetry-proto's
`trace/v1`), written directly from `Observed`: no SDK span, no protobuf runtime.

What a span is comes from `spans` alone; this module only lays it out. Most of a span repeats
from one request to the next (name, kind, status, all but the `spans.VARYING` attributes, the
fault events but for their time): that part is encoded once per `spans.shape` and kept in a
bounded cache, so a span costs its ids, its times, the varying attributes and one join. The
resource and the scope are encoded once per process.

Protobuf in brief: a field is a varint key `(number << 3) | wire type` (0 varint, 1 fixed64,
2 length-delimited, 5 fixed32) then its value; a message inside another is length-delimited;
fields may come in any order and a repeated field is the same field written again.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, NamedTuple

from sandboxd_router.telemetry import spans, traceparent
from sandboxd_router.telemetry.observed import Observed

_SMALL: Final = [bytes((n,)) for n in range(0x80)]
_MASK64: Final = (1 << 64) - 1
_DOUBLE: Final = struct.Struct("<d")
# Span.trace_id (1) 16 bytes, span_id (2) 8 bytes[, parent_span_id (4) 8 bytes]
_CHILD_IDS: Final = struct.Struct(">2s16s2sQ2s8s")
_ROOT_IDS: Final = struct.Struct(">2s16s2sQ")
_TRACE: Final = b"\x0a\x10"
_SPAN_ID: Final = b"\x12\x08"
_PARENT: Final = b"\x22\x08"
_TIMES: Final = struct.Struct("<BQBQ")  # Span.start_time_unix_nano (7), end (8): fixed64
_EVENT_TIME: Final = struct.Struct("<BQ")  # Event.time_unix_nano (1): fixed64

# keys of the other fields written here (message.field (number): wire type)
_SPAN: Final = b"\x12"  # ScopeSpans.spans (2)
_NAME: Final = 0x2A  # Span.name (5)
_KIND: Final = b"\x30"  # Span.kind (6): varint
_ATTRIBUTE: Final = 0x4A  # Span.attributes (9)
_EVENT: Final = b"\x5a"  # Span.events (11)
_STATUS_ERROR: Final = b"\x7a\x02\x18\x02"  # Span.status (15) = Status{code (3): ERROR (2)}
# Span.flags (16, fixed32), as the SDK sets them: "is the parent remote" is known (0x100),
# and it is (0x200) when the span continues a caller's trace
_FLAGS_REMOTE: Final = b"\x85\x01" + struct.pack("<I", 0x300)
_FLAGS_ROOT: Final = b"\x85\x01" + struct.pack("<I", 0x100)
_KINDS: Final = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}


def varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(key: int, payload: bytes) -> bytes:
    """A length-delimited field (`key` already carries wire type 2)."""
    return varint(key) + varint(len(payload)) + payload


def value(v: object) -> bytes:
    """An `AnyValue`: string (1), bool (2), int (3), double (4), array (5) of scalars."""
    if type(v) is int:  # (first: the sizes of every span)
        return b"\x18" + varint(v & _MASK64)  # int64: two's complement for negatives
    if isinstance(v, str):
        return field(0x0A, v.encode())
    if isinstance(v, bool):
        return b"\x10\x01" if v else b"\x10\x00"
    if isinstance(v, int):
        return b"\x18" + varint(v & _MASK64)
    if isinstance(v, float):
        return b"\x21" + _DOUBLE.pack(v)
    if isinstance(v, Sequence | frozenset | set):  # ArrayValue{values (1)}
        return field(0x2A, b"".join(field(0x0A, value(item)) for item in v))
    raise TypeError(f"an attribute value of type {type(v).__name__}")


def key_value(key: str, v: object) -> bytes:
    """A `KeyValue` message's content: key (1), value (2)."""
    return field(0x0A, key.encode()) + field(0x12, value(v))


def attributes(key: int, items: Iterable[tuple[str, object]]) -> bytes:
    """Repeated `KeyValue` fields numbered `key` (Span 9, Event 3, Resource 1)."""
    return b"".join(field(key, key_value(k, v)) for k, v in items)


class _Shaped(NamedTuple):
    """What every span of one `spans.shape` shares, encoded."""

    head: bytes
    """name and kind"""
    attributes: bytes
    """all but the varying ones"""
    status: bytes
    events: tuple[bytes, ...]
    """each event's name and attributes, without its time"""


# the varying attributes' keys, ready to be followed by the value's length and the value
_VARYING: Final = tuple(field(0x0A, key.encode()) + b"\x12" for key in spans.VARYING)
_VALUES: Final = 4096  # values of one varying attribute kept encoded (sizes repeat)


def _varying(prefix: bytes, v: object, known: dict[object, bytes]) -> bytes:
    """A varying attribute, to be kept in `known` (emptied when full: no value is special)."""
    if len(known) >= _VALUES:
        known.clear()
    any_value = value(v)
    kv = prefix + varint(len(any_value)) + any_value
    return field(_ATTRIBUTE, kv)


class SpanEncoder:
    """Spans of one process (its resource, the scope `scope`) as OTLP/protobuf bytes."""

    def __init__(
        self,
        resource: Mapping[str, object],
        *,
        schema_url: str = "",
        scope: str = "sandboxd_router",
        shapes: int = 4096,
    ) -> None:
        self._resource = field(0x0A, attributes(0x0A, resource.items()))  # ResourceSpans (1)
        self._scope = field(0x0A, field(0x0A, scope.encode()))  # ScopeSpans.scope (1) {name}
        self._schema = field(0x1A, schema_url.encode()) if schema_url else b""
        self._shapes: dict[spans.Shape, _Shaped] = {}
        self._varying: tuple[dict[object, bytes], ...] = tuple({} for _ in _VARYING)
        self._max_shapes = shapes

    def span(self, o: Observed) -> bytes:
        """One span: a `ScopeSpans.spans` field, ready to be joined into a `request`."""
        shaped = self._shapes.get(spans.shape(o)) or self._learn(o)
        span_id = spans.span_number(o.seq)
        context = traceparent.parse(o.traceparent)
        if context is None:  # no caller's trace: the router's span starts one
            trace = (random.getrandbits(128) or 1).to_bytes(16, "big")
            parts = [_ROOT_IDS.pack(_TRACE, trace, _SPAN_ID, span_id), shaped.head]
            flags = _FLAGS_ROOT
        else:
            trace, parent = bytes.fromhex(context[0]), bytes.fromhex(context[1])
            parts = [_CHILD_IDS.pack(_TRACE, trace, _SPAN_ID, span_id, _PARENT, parent)]
            parts.append(shaped.head)
            flags = _FLAGS_REMOTE
        start = int(o.start * 1e9)
        parts += (_TIMES.pack(0x39, start, 0x41, start + int(o.duration * 1e9)), shaped.attributes)
        for known, v, prefix in zip(self._varying, spans.varying(o), _VARYING, strict=True):
            if v is not None:
                encoded = known.get(v)
                if encoded is None:
                    encoded = known[v] = _varying(prefix, v, known)
                parts.append(encoded)
        if shaped.events:
            at = _EVENT_TIME.pack(0x09, int(spans.fault_time(o) * 1e9))
            for event in shaped.events:
                parts += (_EVENT, varint(len(at) + len(event)), at, event)
        parts += (shaped.status, flags)
        body = b"".join(parts)
        return _SPAN + varint(len(body)) + body

    def request(self, encoded: Sequence[bytes]) -> bytes:
        """An `ExportTraceServiceRequest` of spans made by `span`."""
        scope_spans = self._scope + b"".join(encoded)
        resource_spans = self._resource + field(0x12, scope_spans) + self._schema
        return field(0x0A, resource_spans)

    def _learn(self, o: Observed) -> _Shaped:
        span = spans.span_of(o)
        shared = [(k, v) for k, v in span.attributes.items() if k not in spans.VARYING]
        shaped = _Shaped(
            head=field(_NAME, span.name.encode()) + _KIND + varint(_KINDS[span.kind]),
            attributes=attributes(_ATTRIBUTE, shared),
            status=_STATUS_ERROR if span.failed else b"",
            events=tuple(
                field(0x12, e.name.encode()) + attributes(0x1A, e.attributes.items())
                for e in span.events
            ),
        )
        if len(self._shapes) >= self._max_shapes:  # the oldest shape goes
            del self._shapes[next(iter(self._shapes))]
        self._shapes[spans.shape(o)] = shaped
        return shaped
