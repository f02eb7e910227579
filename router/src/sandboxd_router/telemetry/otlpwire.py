"""The router's spans as OTLP/protobuf (`ExportTraceServiceRequest` of opentelemetry-proto's
`trace/v1`), written directly from `Observed`: no SDK span, no protobuf runtime.

What a span is comes from `spans` alone; this module only lays it out. Most of a span repeats
from one request to the next (name, kind, status, all but the `spans.VARYING` attributes, the
fault events but for their time): that part is encoded once per `spans.shape` and kept in a
bounded cache, shared by every sandbox (each sandbox's `sandboxd.sandbox` attribute is encoded
once too, and put after it), so a span costs its ids, its times and the varying attributes.
And most spans cost less: a plain request's (no fault, no MCP field) whose names, status,
outcome, body sizes and path are those of the last span of its `Names` (the ring's reader
makes one per sandbox, service and method) is its ids, its times and one write of what that
span had.

A read's spans are written into one `librt.strings.BytesWriter` (mypyc's runtime library,
which the build already needs): compiled, its writes of bytes and of fixed-width numbers are
native calls, where a `struct` pack converts each number from an object and a `b"".join`
walks a list of pieces (together ~3,000 instructions a span). The resource and the scope are
encoded once per process.

Protobuf in brief: a field is a varint key `(number << 3) | wire type` (0 varint, 1 fixed64,
2 length-delimited, 5 fixed32) then its value; a message inside another is length-delimited;
fields may come in any order and a repeated field is the same field written again.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from librt.strings import BytesWriter, write_i16_le, write_i64_le
from mypy_extensions import i64

from sandboxd_router.telemetry import spans, traceparent
from sandboxd_router.telemetry.observed import Observed
from sandboxd_router.telemetry.spans import Shape

_SMALL: Final = [bytes((n,)) for n in range(0x80)]
_MASK64: Final = (1 << 64) - 1
_DOUBLE: Final = struct.Struct("<d")
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


class _Shaped:
    """What every span of one `spans.shape` shares, encoded."""

    root: bytes
    """Status, flags, name, kind, and all but the varying attributes, of a span that starts a
    trace (fields may come in any order)."""
    remote: bytes
    """The same of a span that continues a caller's trace (only the flags differ)."""
    events: tuple[bytes, ...]
    """each event's name and attributes, without its time"""

    def __init__(self, root: bytes, remote: bytes, events: tuple[bytes, ...]) -> None:
        self.root = root
        self.remote = remote
        self.events = events


class _Named:
    """What the plain spans (no fault, no MCP field) of one `Names`, status and outcome share,
    and the varying attributes of the last of them, encoded: one span's worth of bytes (the
    rest is shared), kept for each `Names` seen."""

    def __init__(
        self, owner: object, o: Observed, shaped: _Shaped, sandbox: bytes, remote: bool
    ) -> None:
        self.owner = owner
        """The encoder that made it: another one's (a test's, say) is not this one's."""
        self.sandbox = o.sandbox
        self.service = o.service
        self.route = o.route
        self.method = o.method
        self.status = o.status
        self.error = o.error
        self.shaped = shaped
        self.sandbox_attribute = sandbox
        self.size_in = -1
        self.size_out = -1
        self.path = ""
        self.tail = b""
        """The body sizes' and path's attributes for `size_in`, `size_out` and `path`."""
        self.remote = remote
        self.middle = b""
        """All of a span but its ids and times: the shape's `remote` head when `remote`, else
        its `root`, the sandbox's attribute and `tail` (made by `varied`, again by
        `middle_of`)."""

    def varied(self, size_in: int, size_out: int, path: str, tail: bytes) -> None:
        self.size_in = size_in
        self.size_out = size_out
        self.path = path
        self.tail = tail
        self.middle_of(self.remote)

    def middle_of(self, remote: bool) -> bytes:
        """`middle` for a span that continues a caller's trace (`remote`) or starts one."""
        head = self.shaped.remote if remote else self.shaped.root
        self.middle = head + self.sandbox_attribute + self.tail
        self.remote = remote
        return self.middle


_PIECES: Final = 16
"""Up to this many pieces of spans are sent as they are (`request_pieces`)."""
_PLAIN: Final = 5
"""The length of a plain request's `spans.shape`."""
_SPAN_HEADS: Final = tuple(_SPAN + varint(n) for n in range(1024))
"""A span's field key and length, by its length, for the lengths most spans have."""
# the keys and lengths of the ids, read as little-endian 16-bit numbers (one write each)
_TRACE_ID: Final = 0x100A  # Span.trace_id (1), 16 bytes: 0a 10
_PARENT_ID: Final = 0x0822  # Span.parent_span_id (4), 8 bytes: 22 08
_SPAN_ID: Final = 0x0812  # Span.span_id (2), 8 bytes: 12 08
_START: Final = 0x39  # Span.start_time_unix_nano (7): fixed64
_END: Final = 0x41  # Span.end_time_unix_nano (8): fixed64
_ROOT_SIZE: Final = 2 + 16 + 2 + 8 + 1 + 8 + 1 + 8  # the trace id, span id and times
_REMOTE_SIZE: Final = _ROOT_SIZE + 2 + 8  # and the parent span id
_PATH_KEY, _IN_KEY, _OUT_KEY, _ID_KEY, _SESSION_KEY = (
    field(0x0A, key.encode()) + b"\x12" for key in spans.VARYING
)
"""The varying attributes' `KeyValue` keys, each followed by its value's key (its length and
the value follow)."""
_SANDBOX: Final = "sandboxd.sandbox"
_SANDBOX_KEY: Final = field(0x0A, _SANDBOX.encode()) + b"\x12"
_LISTED: Final = 4096
"""Body sizes below this are looked up in a list (sizes repeat: the same answer), the others in
a dict: an int key costs an object, a hash and a probe."""


def _number(prefix: bytes, number: int) -> bytes:
    """An int attribute keyed `prefix` (`Span.attributes`)."""
    any_value = b"\x18" + varint(number & _MASK64)  # int64: two's complement for negatives
    return field(_ATTRIBUTE, prefix + varint(len(any_value)) + any_value)


def _text(prefix: bytes, text: str) -> bytes:
    """A string attribute (`Span.attributes`)."""
    any_value = field(0x0A, text.encode())
    return field(_ATTRIBUTE, prefix + varint(len(any_value)) + any_value)


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
        sandboxes: int = 16384,
    ) -> None:
        self._resource = field(0x0A, attributes(0x0A, resource.items()))  # ResourceSpans (1)
        self._scope = field(0x0A, field(0x0A, scope.encode()))  # ScopeSpans.scope (1) {name}
        self._schema = field(0x1A, schema_url.encode()) if schema_url else b""
        self._shapes: dict[Shape, _Shaped] = {}
        self._max_shapes = shapes
        self._sandboxes: dict[str, bytes] = {}
        """The `sandboxd.sandbox` attribute, encoded, by sandbox: what a span adds to its
        shape's (shared) head."""
        self._max_sandboxes = sandboxes
        self._paths: dict[str, bytes] = {}
        """The `url.path` attribute, encoded, by path (paths repeat)."""
        self._ins: list[bytes | None] = [None] * _LISTED
        self._outs: list[bytes | None] = [None] * _LISTED
        """The body sizes' attributes (request's, response's), encoded, by size under
        `_LISTED`."""
        self._numbers: dict[int, tuple[bytes, bytes]] = {}
        """The same of the larger sizes, both by size."""
        self._max_values = values
        self._out = BytesWriter()
        """Where `spans` writes, kept: its buffer grows to a read's spans once, not each read."""

    def spans(self, batch: list[Observed]) -> bytes:
        """The spans of `batch`, each a `ScopeSpans.spans` field, in one piece: what `request`
        joins."""
        out = self._out
        out.truncate(0)  # (and what a span that failed to encode left)
        for o in batch:
            self._add(o, out)
        return out.getvalue()

    def span(self, o: Observed) -> bytes:
        return self.spans([o])

    def request(self, encoded: Sequence[bytes]) -> bytes:
        """An `ExportTraceServiceRequest` of spans made by `spans` (or `span`), in one piece."""
        return b"".join(self.request_pieces(encoded))

    def request_pieces(self, encoded: Sequence[bytes]) -> list[bytes]:
        """`request` as pieces to send one after the other: its head, then `encoded` as they
        are (a batch is ~600 kB: joining it would copy it), unless they are many small ones
        (a send each would cost more than a copy)."""
        scope_spans = len(self._scope) + sum(map(len, encoded))
        scope_head = b"\x12" + varint(scope_spans)  # ResourceSpans.scope_spans (2)
        resource_spans = len(self._resource) + len(self._schema) + len(scope_head) + scope_spans
        head = b"".join((b"\x0a", varint(resource_spans), self._resource, self._schema,
                         scope_head, self._scope))  # fmt: skip
        if len(encoded) > _PIECES:
            return [head, b"".join(encoded)]
        return [head, *encoded]

    def _add(self, o: Observed, out: BytesWriter) -> None:
        """Writes the span of `o` to `out`: its field's head, then its fields. Most spans are
        a plain request's (no fault, no MCP) with the names, status, outcome, sizes and path
        of the last span of their `Names` (one object per sandbox and service, from the ring's
        reader): theirs is what that object keeps (`Names.span`), its ids and times, and one
        write of the rest."""
        named = o.names.span
        if (
            not isinstance(named, _Named)
            or named.owner is not self
            or named.status != o.status
            or named.error != o.error
            or named.sandbox is not o.sandbox  # (the names `named` was made of, to the letter)
            or named.service is not o.service
            or named.route is not o.route
            or named.method is not o.method
            or len(o.faults) != 0  # (compiled: a length read; `o.faults` is a call)
            or o.rpc_method is not None
            or o.tool is not None
            or o.protocol is not None
            or o.rpc_code is not None
        ):
            self._add_shaped(o, out)
            return
        valid, high, low, parent = _context(o)
        path = o.path
        if o.bytes_in != named.size_in or o.bytes_out != named.size_out or path != named.path:
            size_in, size_out, encoded_path, _ = self._varying(o)
            named.remote = valid  # (the middle `varied` makes: this span's)
            named.varied(o.bytes_in, o.bytes_out, path, size_in + size_out + encoded_path)
        middle = named.middle if valid == named.remote else named.middle_of(valid)
        size = len(middle) + (_REMOTE_SIZE if valid else _ROOT_SIZE)
        out.write(_SPAN_HEADS[size] if size < 1024 else _SPAN + varint(size))
        _ids_and_times(o, valid, high, low, parent, out)
        out.write(middle)

    def _add_shaped(self, o: Observed, out: BytesWriter) -> None:
        """`_add` of any span, by its `spans.shape` (and, for a plain request's, what the next
        spans of its names find)."""
        key = spans.shape(o)
        shaped = self._shapes.get(key)
        if shaped is None:
            shaped = self._learn(o, key)
        valid, high, low, parent = _context(o)
        sandbox = b""
        if o.sandbox:  # (`spans.span_of` gives baseline traffic no `sandboxd.sandbox`)
            got = self._sandboxes.get(o.sandbox)
            sandbox = got if got is not None else self._sandbox(o.sandbox)
        size_in, size_out, path, more = self._varying(o)
        if len(key) == _PLAIN:  # (no fault, no MCP field: the next spans of its names)
            self._name(o, shaped, sandbox, size_in + size_out + path, valid)
        events = _events(o, shaped.events) if shaped.events else b""
        size = len(sandbox) + len(size_in) + len(size_out) + len(path) + len(more) + len(events)
        if valid:  # a child of the caller's span
            head = shaped.remote
            size += len(head) + _REMOTE_SIZE
        else:  # no caller's trace: the router's span starts one
            head = shaped.root
            size += len(head) + _ROOT_SIZE
        out.write(_SPAN_HEADS[size] if size < 1024 else _SPAN + varint(size))
        _ids_and_times(o, valid, high, low, parent, out)
        out.write(head)
        out.write(sandbox)
        out.write(size_in)
        out.write(size_out)
        out.write(path)
        out.write(more)
        out.write(events)

    def _name(
        self, o: Observed, shaped: _Shaped, sandbox: bytes, tail: bytes, remote: bool
    ) -> None:
        """Keeps what the next plain spans of `o.names` share with `o`'s (a child of the
        caller's span when `remote`), on the names (they come and go with their sandboxes)."""
        named = _Named(self, o, shaped, sandbox, remote)
        named.varied(o.bytes_in, o.bytes_out, o.path, tail)
        o.names.span = named

    def _varying(self, o: Observed) -> tuple[bytes, bytes, bytes, bytes]:
        """The `spans.VARYING` attributes, encoded: the body sizes', the path's and the MCP
        ones' (b"" for those that are None). (Unrolled, and what repeats, paths and sizes,
        cached: this runs for every span.)"""
        path, size_in, size_out, request_id, session = spans.varying(o)
        if 0 <= size_in < _LISTED:
            encoded_in = self._ins[size_in]
            if encoded_in is None:
                encoded_in = self._ins[size_in] = _number(_IN_KEY, size_in)
        else:
            encoded_in = self._large(size_in)[0]
        if 0 <= size_out < _LISTED:
            encoded_out = self._outs[size_out]
            if encoded_out is None:
                encoded_out = self._outs[size_out] = _number(_OUT_KEY, size_out)
        else:
            encoded_out = self._large(size_out)[1]
        encoded_path = b""
        if path is not None:
            got = self._paths.get(path)
            encoded_path = got if got is not None else self._path(path)
        more = b""
        if request_id is not None:
            more = _text(_ID_KEY, request_id)
        if session is not None:
            more += _text(_SESSION_KEY, session)
        return encoded_in, encoded_out, encoded_path, more

    def _large(self, number: int) -> tuple[bytes, bytes]:
        """A size's attributes past `_LISTED` (request's, response's), cached."""
        encoded = self._numbers.get(number)
        if encoded is None:
            if len(self._numbers) >= self._max_values:  # no value is special: start afresh
                self._numbers.clear()
            encoded = (_number(_IN_KEY, number), _number(_OUT_KEY, number))
            self._numbers[number] = encoded
        return encoded

    def _path(self, path: str) -> bytes:
        if len(self._paths) >= self._max_values:
            self._paths.clear()
        encoded = self._paths[path] = _text(_PATH_KEY, path)
        return encoded

    def _sandbox(self, sandbox: str) -> bytes:
        if len(self._sandboxes) >= self._max_sandboxes:  # (sandboxes come and go)
            self._sandboxes.clear()
        encoded = self._sandboxes[sandbox] = _text(_SANDBOX_KEY, sandbox)
        return encoded

    def _learn(self, o: Observed, shape: Shape) -> _Shaped:
        """What every span of `shape` has: all of `spans.span_of` but the varying attributes,
        the sandbox's (a sandbox's own) and the events' time."""
        span = spans.span_of(o)
        shared = [
            (k, v) for k, v in span.attributes.items() if k not in spans.VARYING and k != _SANDBOX
        ]
        status = _STATUS_ERROR if span.failed else b""
        head = field(_NAME, span.name.encode()) + _KIND + varint(_KINDS[span.kind])
        head += attributes(_ATTRIBUTE, shared)
        shaped = _Shaped(
            status + _FLAGS_ROOT + head,
            status + _FLAGS_REMOTE + head,
            tuple(
                field(0x12, e.name.encode()) + attributes(0x1A, e.attributes.items())
                for e in span.events
            ),
        )
        if len(self._shapes) >= self._max_shapes:  # the oldest shape goes
            del self._shapes[next(iter(self._shapes))]
        self._shapes[shape] = shaped
        return shaped


def _context(o: Observed) -> tuple[bool, i64, i64, i64]:
    """`traceparent.decode` of the request's header (not valid when it has none)."""
    raw = o.raw_traceparent  # (the text is made only for a request built without it)
    if len(raw) != traceparent.LENGTH:  # (most are exactly the 55 bytes of version 00)
        fields = traceparent.fields_of(raw) if raw else traceparent.fields(o.traceparent)
        if fields is None:
            return False, 0, 0, 0
        raw = fields
    return traceparent.decode(raw)


def _ids_and_times(o: Observed, valid: bool, high: i64, low: i64, parent: i64,
                   out: BytesWriter) -> None:  # fmt: skip
    """Writes the span's trace id, its parent's id when `valid` (`traceparent.decode`), its
    span id and its times."""
    write_i16_le(out, _TRACE_ID)
    if valid:
        write_i64_le(out, high)
        write_i64_le(out, low)
        write_i16_le(out, _PARENT_ID)
        write_i64_le(out, parent)
    else:
        out.write((random.getrandbits(128) or 1).to_bytes(16, "big"))
    write_i16_le(out, _SPAN_ID)
    write_i64_le(out, spans.span_bytes(o.seq))
    duration = o.duration
    start = int((o.end - duration) * 1e9)  # (the end from the duration: ns are past a double)
    out.append(_START)
    write_i64_le(out, start)
    out.append(_END)
    write_i64_le(out, start + int(duration * 1e9))


def _events(o: Observed, events: tuple[bytes, ...]) -> bytes:
    """The fault events, at their time."""
    at = _EVENT_TIME.pack(0x09, int(spans.fault_time(o) * 1e9))
    return b"".join(_EVENT + varint(len(at) + len(e)) + at + e for e in events)
