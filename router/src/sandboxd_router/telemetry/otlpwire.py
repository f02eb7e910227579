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

import itertools
import random
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, NamedTuple

from sandboxd_router.telemetry import spans, traceparent
from sandboxd_router.telemetry.observed import Observed

_SMALL: Final = [bytes((n,)) for n in range(0x80)]
_MASK64: Final = (1 << 64) - 1
_DOUBLE: Final = struct.Struct("<d")
# Span.span_id (2)'s 8 bytes (its key ends the ids), start_time_unix_nano (7) and end (8):
# fixed64, little-endian
_TIMED: Final = struct.Struct("<QBQBQ")
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

    heads: tuple[bytes, bytes]
    """Status, flags, name, kind, and all but the varying attributes: of a span that starts a
    trace, of one that continues a caller's (fields may come in any order)."""
    size: int
    """The length of a head (both have the same) and of the span id's value and times."""
    events: tuple[bytes, ...]
    """each event's name and attributes, without its time"""


# the varying attributes' keys, ready to be followed by the value's length and the value
_VARYING: Final = tuple(field(0x0A, key.encode()) + b"\x12" for key in spans.VARYING)
_TIMED_SIZE: Final = _TIMED.size
# a span's field key and length, by its length, for the lengths most spans have
_SPAN_HEADS: Final = tuple(_SPAN + varint(n) for n in range(1024))


def _varying(values: tuple[object, ...]) -> bytes:
    """The varying attributes (a None value: that attribute left out)."""
    out = []
    for prefix, v in zip(_VARYING, values, strict=True):
        if v is not None:
            any_value = value(v)
            out.append(field(_ATTRIBUTE, prefix + varint(len(any_value)) + any_value))
    return b"".join(out)


class SpanEncoder:
    """Spans of one process (its resource, the scope `scope`) as OTLP/protobuf bytes."""

    def __init__(
        self,
        resource: Mapping[str, object],
        *,
        schema_url: str = "",
        scope: str = "sandboxd_router",
        shapes: int = 4096,
        values: int = 4096,
    ) -> None:
        self._resource = field(0x0A, attributes(0x0A, resource.items()))  # ResourceSpans (1)
        self._scope = field(0x0A, field(0x0A, scope.encode()))  # ScopeSpans.scope (1) {name}
        self._schema = field(0x1A, schema_url.encode()) if schema_url else b""
        self._shapes: dict[spans.Shape, _Shaped] = {}
        self._max_shapes = shapes
        self._values: dict[tuple[object, ...], bytes] = {}
        """The varying attributes, encoded, by their values (sizes repeat: the same answer)."""
        self._max_values = values

    def span(self, o: Observed) -> bytes:
        """One span: a `ScopeSpans.spans` field, ready to be joined into a `request`."""
        shaped = self._shapes.get(spans.shape(o)) or self._learn(o)
        values = spans.varying(o)
        varying = self._values.get(values)
        if varying is None:
            varying = self._remember(values)
        context = traceparent.parse(o.traceparent)
        if context is None:  # no caller's trace: the router's span starts one
            trace = random.getrandbits(128) or 1
            ids = b"\x0a\x10" + trace.to_bytes(16, "big") + b"\x12\x08"  # trace_id (1)
            head = shaped.heads[0]
        else:  # trace_id (1), parent_span_id (4)
            ids = bytes.fromhex(f"0a10{context[0]}2208{context[1]}1208")
            head = shaped.heads[1]
        duration = o.duration
        start = int((o.end - duration) * 1e9)  # (the end from the duration: ns are past a double)
        timed = _TIMED.pack(
            spans.span_number(o.seq), 0x39, start, 0x41, start + int(duration * 1e9)
        )
        if shaped.events:
            varying += self._events(o, shaped.events)
        size = len(ids) + shaped.size + len(varying)
        framed = _SPAN_HEADS[size] if size < 1024 else _SPAN + varint(size)
        return b"".join((framed, ids, timed, head, varying))

    def request(self, encoded: Sequence[bytes]) -> bytes:
        """An `ExportTraceServiceRequest` of spans made by `span`: one copy of them (a batch is
        ~150 kB; each nesting by concatenation would copy it again)."""
        scope_spans = len(self._scope) + sum(map(len, encoded))
        scope_head = b"\x12" + varint(scope_spans)  # ResourceSpans.scope_spans (2)
        resource_spans = len(self._resource) + len(self._schema) + len(scope_head) + scope_spans
        head = (b"\x0a", varint(resource_spans), self._resource, self._schema, scope_head)
        return b"".join(itertools.chain(head, (self._scope,), encoded))

    def _events(self, o: Observed, events: tuple[bytes, ...]) -> bytes:
        at = _EVENT_TIME.pack(0x09, int(spans.fault_time(o) * 1e9))
        return b"".join(_EVENT + varint(len(at) + len(e)) + at + e for e in events)

    def _remember(self, values: tuple[object, ...]) -> bytes:
        if len(self._values) >= self._max_values:  # no value is special: start afresh
            self._values.clear()
        encoded = self._values[values] = _varying(values)
        return encoded

    def _learn(self, o: Observed) -> _Shaped:
        span = spans.span_of(o)
        shared = [(k, v) for k, v in span.attributes.items() if k not in spans.VARYING]
        status = _STATUS_ERROR if span.failed else b""
        head = field(_NAME, span.name.encode()) + _KIND + varint(_KINDS[span.kind])
        head += attributes(_ATTRIBUTE, shared)
        shaped = _Shaped(
            heads=(status + _FLAGS_ROOT + head, status + _FLAGS_REMOTE + head),
            size=len(status + _FLAGS_ROOT + head) + _TIMED_SIZE,
            events=tuple(
                field(0x12, e.name.encode()) + attributes(0x1A, e.attributes.items())
                for e in span.events
            ),
        )
        if len(self._shapes) >= self._max_shapes:  # the oldest shape goes
            del self._shapes[next(iter(self._shapes))]
        self._shapes[spans.shape(o)] = shaped
        return shaped
