"""What every connection shares: the current table, MCP sessions, settings and the recorder."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sandboxd_router.boundary import Swept
from sandboxd_router.mcp import Sessions
from sandboxd_router.record import Recorder
from sandboxd_router.table import EMPTY, Table


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = 32 * 1024
    """Request line plus headers over this → 431."""
    mcp_body_bytes: int = 1 << 20
    """An MCP request body read to find `params._meta.baggage` (larger: routed without it)."""
    connect_timeout: float = 5.0
    upstream_timeout: float = 60.0
    """Seconds from the request's last byte to the response head (504 after)."""
    idle_timeout: float = 75.0
    """A keep-alive client connection idle this long is closed."""
    busy_poll: float = 0.0
    """Seconds to poll for an upstream's answer instead of sleeping (0: off)."""
    head_timeout: float = 30.0
    """A request head must be whole this long after its first byte (408 and close after); a
    new connection must start its first head this soon too. Checked by the once-a-second
    sweep, so up to a second late."""
    body_timeout: float = 30.0
    """A request body that gets no byte for this long: 408 (or a reset once the response has
    begun), close, and the upstream request is aborted."""
    max_connections: int = 10_000
    """Client connections held at once (idle keep-alive ones count). Past it a new connection
    gets a 503 with `Connection: close` at once, unread, and is closed."""
    mcp_body_budget: int = 16 << 20
    """Bytes of MCP bodies held (to read `params._meta.baggage`) across all connections. A body
    that would go past it is routed without its body being read: by the remaining rules."""


class BusyPoll:
    """The one spinner that keeps the loop polling for an upstream's answer (`Limits.busy_poll`
    seconds at most; 0: never)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.spinning = False


class Context:
    """What an exchange needs of the router, handed to it at construction (one per client
    connection, so a request passes one reference, not five)."""

    def __init__(
        self,
        limits: Limits,
        sessions: Sessions,
        recorder: Recorder | None,
        loop: asyncio.AbstractEventLoop,
        busy: BusyPoll,
    ) -> None:
        self.limits = limits
        self.sessions = sessions
        self.recorder = recorder
        """Where each request's record goes (None: recording is off)."""
        self.loop = loop  # kept: asyncio.get_running_loop() costs a getpid() system call
        self.busy = busy


@dataclass(slots=True)
class RouterState:
    limits: Limits
    recorder: Recorder | None
    table: Table = EMPTY
    sessions: Sessions = field(default_factory=Sessions)
    connections: set[Swept] = field(default_factory=set)
    busy: BusyPoll = field(init=False)
    held_body: int = 0
    """Bytes of MCP bodies held right now (bounded by `Limits.mcp_body_budget`)."""

    def __post_init__(self) -> None:
        self.busy = BusyPoll(self.limits.busy_poll)
