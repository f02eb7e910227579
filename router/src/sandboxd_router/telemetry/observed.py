"""One request as the telemetry process sees it, decoded from the request path's fixed-size
record, and what a consumer of those requests (a sink) offers.

The request path only writes a compact record (`sandboxd_router.record`); everything here is
built from it in the telemetry process, where an SDK call or a JSON encoding costs the request
path nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

# the outcome classes (`Observed.error`): what went wrong, the first that applies
OK: Final = ""
HTTP_5XX: Final = "http_5xx"  # a 5xx reached the client (the upstream's or the router's own)
JSONRPC: Final = "jsonrpc"  # an MCP response carrying a JSON-RPC error object
TOOL_ERROR: Final = "tool_error"  # an MCP `tools/call` result with `isError: true`
TRANSPORT: Final = "transport"  # no whole response: a reset, an upstream lost mid-response
ERRORS: Final = (HTTP_5XX, JSONRPC, TOOL_ERROR, TRANSPORT)

SANDBOX: Final = "sandbox"  # route decision: served by the sandbox's fork
BASELINE: Final = "baseline"  # served by the baseline (with a sandbox's key or none)

# A record's tail (`Observed._tail`, one bytes object where the ring reader used to make two):
# the traceparent's length (1 byte) and bytes, the target's length (2, little-endian) and its
# first bytes, as `record.CORE` lays them out (`ring.SLOT` checks it).
TAIL_TRACEPARENT: Final = 55  # the traceparent's bytes, from offset 1
TAIL_TARGET_LEN: Final = 56
TAIL_TARGET: Final = 58


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    id: str


class Names:
    """The names of a request's record: its service, sandbox, routing key, route and method,
    one object for every record that the ring's reader decodes alike (`ring.RingReader`). What
    a sink derives from these names alone it keeps here, and finds again with no lookup."""

    __slots__ = ("method", "middle", "middle_status", "middles", "route", "routing_key",
                 "sandbox", "service", "span", "tally")  # fmt: skip

    def __init__(
        self, service: str, sandbox: str, routing_key: str, route: str, method: str
    ) -> None:
        self.service = service
        self.sandbox = sandbox
        self.routing_key = routing_key
        self.route = route
        self.method = method
        self.middle_status = -1
        self.middle = b""
        """The access log's line middle (`accesslog`) for the status `middle_status` (-1:
        none yet): it depends on these names and the status only."""
        self.middles: dict[int, bytes] | None = None
        """Its middles for the other statuses seen, by status."""
        self.tally: object = None
        """Where the signals' tally counts these names' requests now (`tally.Open`), kept
        here: found with no lookup."""
        self.span: object = None
        """What the OTLP encoder's last plain span of these names was made of
        (`otlpwire._Named`, with the encoder that made it), kept here alike."""


class Observed:
    """A plain class, not a dataclass: compiled (`native.HOT`), its `__init__` is native code,
    where a dataclass's is generated at run time and interpreted (1 µs a request)."""

    end: float
    """Wall-clock time (`time.time()`) when the exchange ended."""
    duration: float
    """Seconds from the request head's first byte to the response's last byte (or the end)."""
    service: str
    """"-" when no service was routed (a 404/503 for an unknown port or host)."""
    sandbox: str
    """The sandbox whose routing key the request carried, forked or not; "" for none."""
    routing_key: str
    """That sandbox's routing key ("" for none): the control plane keys its rows by it."""
    route: str
    """`SANDBOX` (its fork served it) or `BASELINE`."""
    method: str
    status: int
    """The status the client got; 0 when none (a reset)."""
    bytes_in: int
    bytes_out: int
    tp_bytes: bytes
    tp_at: int
    tp_len: int
    """The request's `traceparent` as the record holds it: `tp_len` bytes (0: none) at
    `tp_at` in `tp_bytes` (the record's `TAIL`, or `raw_traceparent` when built by hand).
    The access log cuts the trace id out of these bytes; `raw_traceparent` is a copy of them
    and `traceparent` their text, each made when first asked for (most requests' never are)."""
    error: str
    """`OK` or one of `ERRORS`."""
    injected: bool
    """A fault was applied to this request (its error or latency is the fault's)."""
    faults: tuple[Fault, ...]
    """The faults applied, in the order applied."""
    injected_at: float
    """Seconds after the start when the (last) fault took effect (0: none)."""
    rpc_method: str | None
    """MCP: the JSON-RPC method (`tools/call`), None when not MCP or not found."""
    tool: str | None
    """MCP `tools/call`: the tool's name (bounded cardinality: "(other)" past the cap)."""
    rpc_id: str | None
    """MCP: the JSON-RPC request id as its JSON text (`7`, `"a1"`), truncated."""
    names: Names
    """The names above in one object, shared by the records decoded alike (one of its own
    when built by hand)."""
    seq: int
    """The record's number in the ring: what the router's span id is made from
    (`spans.span_id`), so every sink gives a request the same span."""
    number: int
    """Its number among the request records the signals send (`tally.Tally`: set as it is
    queued, 0 until then; each request is queued once)."""
    _tail: bytes
    """The record's `TAIL` (b"" when built by hand): its traceparent and its target's first
    `record.PATH` bytes, in one object (the target, which `path` is cut from and decoded
    when first asked for: only the request records kept and the spans exported ask, not the
    access log or the tally)."""
    _target: bytes
    """The target's first bytes when built by hand with them (b"" when built from a `path`)."""
    _target_len: int
    """The whole target's length (the bytes past it are padding)."""
    session: str | None
    """The `Mcp-Session-Id` the request carried (MCP revisions before 2026-07-28), cut at
    `record.SESSION` bytes; None when none."""
    rpc_code: int | None
    """MCP: the code of the JSON-RPC error the response carried (`error` is `JSONRPC`)."""
    protocol: str | None
    """MCP: the request's `MCP-Protocol-Version` (capped like the other names a client picks)."""

    def __init__(
        self,
        end: float,
        duration: float,
        service: str,
        sandbox: str,
        routing_key: str,
        route: str,
        method: str,
        status: int,
        bytes_in: int,
        bytes_out: int,
        traceparent: str | None,
        error: str,
        injected: bool,
        faults: tuple[Fault, ...] = (),
        injected_at: float = 0.0,
        rpc_method: str | None = None,
        tool: str | None = None,
        rpc_id: str | None = None,
        seq: int = 0,
        path: str = "",
        session: str | None = None,
        rpc_code: int | None = None,
        protocol: str | None = None,
        raw_traceparent: bytes = b"",
        target: bytes = b"",
        target_len: int = 0,
        names: Names | None = None,
        tail: bytes = b"",
    ) -> None:
        self.end = end
        self.duration = duration
        self.service = service
        self.sandbox = sandbox
        self.routing_key = routing_key
        self.route = route
        self.method = method
        self.status = status
        self.bytes_in = bytes_in
        self.bytes_out = bytes_out
        self._traceparent = traceparent
        self._tail = tail
        if len(tail):  # (compiled: a length read; a truth test is a generic call)
            self.tp_bytes, self.tp_at = tail, 1
            self.tp_len = min(tail[0], TAIL_TRACEPARENT)
            self._raw: bytes | None = None
            self._cut = tail[0] > TAIL_TRACEPARENT
        else:
            self.tp_bytes, self.tp_at, self.tp_len = raw_traceparent, 0, len(raw_traceparent)
            self._raw = raw_traceparent
            self._cut = False
        self.error = error
        self.injected = injected
        self.faults = faults
        self.injected_at = injected_at
        self.rpc_method = rpc_method
        self.tool = tool
        self.rpc_id = rpc_id
        self.seq = seq
        self.number = 0
        self._path: str | None = None if len(target) or len(tail) else path
        self._target = target
        self._target_len = target_len
        self.session = session
        self.rpc_code = rpc_code
        self.protocol = protocol
        self.names = (
            names if names is not None else Names(service, sandbox, routing_key, route, method)
        )

    def fields(self) -> dict[str, object]:
        """Every field by name (faults as {"kind", "id"} objects)."""
        return {
            "end": self.end, "duration": self.duration, "service": self.service,
            "sandbox": self.sandbox, "routing_key": self.routing_key, "route": self.route,
            "method": self.method, "status": self.status, "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out, "traceparent": self.traceparent, "error": self.error,
            "injected": self.injected,
            "faults": [{"kind": f.kind, "id": f.id} for f in self.faults],
            "injected_at": self.injected_at, "rpc_method": self.rpc_method, "tool": self.tool,
            "rpc_id": self.rpc_id, "seq": self.seq, "path": self.path, "session": self.session,
            "rpc_code": self.rpc_code, "protocol": self.protocol,
        }  # fmt: skip

    @property
    def raw_traceparent(self) -> bytes:
        """The request's `traceparent` as the record holds it (b"" for none). A header longer
        than the record keeps is its first 55 bytes and a dash, the 56th character a later
        version's must have: so version 00, exactly 55 characters, is then invalid."""
        raw = self._raw
        if raw is None:
            at = self.tp_at
            raw = self.tp_bytes[at : at + self.tp_len]
            if self._cut:
                raw += b"-"
            self._raw = raw
        return raw

    @property
    def traceparent(self) -> str | None:
        """The request's `traceparent` as received (parsed here, never on the request path);
        None when it had none."""
        text = self._traceparent
        if text is None and self.tp_len:
            text = self._traceparent = _ascii(self.raw_traceparent)
        return text

    @property
    def path(self) -> str:
        """The target's path (`url.path`: no query), its first `record.PATH` bytes."""
        text = self._path
        if text is None:
            tail = self._tail
            if len(tail):
                length = tail[TAIL_TARGET_LEN] | tail[TAIL_TARGET_LEN + 1] << 8
                raw = _path(tail[TAIL_TARGET:], length)
            else:
                raw = _path(self._target, self._target_len)
            text = self._path = _utf8(raw)
        return text

    @property
    def start(self) -> float:
        return self.end - self.duration


_QUESTION: Final = 0x3F  # "?"


def _path(target: bytes, length: int) -> bytes:
    """The path of a target whose first bytes are `target` and length `length`: up to its
    query (the `?` lies beyond what the record holds when none is in it)."""
    if length < len(target):
        target = target[:length]
    if _QUESTION not in target:  # (an int needle: a memchr; `find` is a method call by name)
        return target
    return target[: target.find(b"?")]


def _utf8(raw: bytes) -> str:
    """A path's bytes (cut at `record.PATH`: maybe inside a character, read as U+FFFD)."""
    try:
        return raw.decode("utf-8")  # (the compiled build's fast path: no error handler)
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")


def _ascii(raw: bytes) -> str:
    """A traceparent's bytes as received (a byte past ASCII read as U+FFFD)."""
    try:
        return raw.decode("ascii")  # (the compiled build's fast path: no error handler)
    except UnicodeDecodeError:
        return raw.decode("ascii", "replace")


class Sink(Protocol):
    """A consumer of observed requests in the telemetry process (the access log, the signals
    reported to the control plane, the span exporter)."""

    def add(self, observed: Observed) -> None:
        """Called for every request, in order; must not block (no I/O)."""

    async def tick(self) -> None:
        """Called about once a second: flush, report, export."""

    async def close(self) -> None:
        """At shutdown: a last flush, bounded in time."""


class BatchSink(Sink, Protocol):
    """A sink that takes a whole read of the ring in one call: the telemetry process's loop
    then makes one call per batch instead of one per request."""

    def add_all(self, batch: list[Observed]) -> None:
        """`add` for each, in order; one that fails is logged and skipped, not the rest."""
