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


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    id: str


@dataclass(slots=True)  # not frozen: a frozen one costs 8 times as much to build (2.6 µs)
class Observed:
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
    traceparent: str | None
    """The request's `traceparent` as received (parsed here, never on the request path)."""
    error: str
    """`OK` or one of `ERRORS`."""
    injected: bool
    """A fault was applied to this request (its error or latency is the fault's)."""
    faults: tuple[Fault, ...] = ()
    """The faults applied, in the order applied."""
    injected_at: float = 0.0
    """Seconds after the start when the (last) fault took effect (0: none)."""
    rpc_method: str | None = None
    """MCP: the JSON-RPC method (`tools/call`), None when not MCP or not found."""
    tool: str | None = None
    """MCP `tools/call`: the tool's name (bounded cardinality: "(other)" past the cap)."""
    rpc_id: str | None = None
    """MCP: the JSON-RPC request id as its JSON text (`7`, `"a1"`), truncated."""
    seq: int = 0
    """The record's number in the ring: what the router's span id is made from
    (`spans.span_id`), so every sink gives a request the same span."""
    path: str = ""
    """The target's path (`url.path`: no query), its first `record.PATH` bytes."""
    session: str | None = None
    """The `Mcp-Session-Id` the request carried (MCP revisions before 2026-07-28), cut at
    `record.SESSION` bytes; None when none."""
    rpc_code: int | None = None
    """MCP: the code of the JSON-RPC error the response carried (`error` is `JSONRPC`)."""
    protocol: str | None = None
    """MCP: the request's `MCP-Protocol-Version` (capped like the other names a client picks)."""

    @property
    def start(self) -> float:
        return self.end - self.duration


class Sink(Protocol):
    """A consumer of observed requests in the telemetry process (the access log, the signals
    reported to the control plane, the span exporter)."""

    def add(self, observed: Observed) -> None:
        """Called for every request, in order; must not block (no I/O)."""

    async def tick(self) -> None:
        """Called about once a second: flush, report, export."""

    async def close(self) -> None:
        """At shutdown: a last flush, bounded in time."""
