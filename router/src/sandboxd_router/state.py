"""What every connection shares: the current table, MCP sessions, settings and the access log."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sandboxd_router.accesslog import AccessLog
from sandboxd_router.mcp import Sessions
from sandboxd_router.table import EMPTY, Table

if TYPE_CHECKING:
    from sandboxd_router.client import ClientConnection


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


@dataclass(slots=True)
class RouterState:
    limits: Limits
    log: AccessLog
    table: Table = EMPTY
    sessions: Sessions = field(default_factory=Sessions)
    connections: set[ClientConnection] = field(default_factory=set)
    spinning: bool = False
