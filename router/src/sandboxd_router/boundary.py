"""What an exchange needs of the client's side of the proxy: the narrow interface
`sandboxd_router.downstream` implements, as `upstream.Receiver` is what an upstream connection
needs of the exchange it serves.

It imports nothing of the router, so the exchange depends on this, not on the connection that
parses requests, and no module of the router imports one that imports it back. The connection
inherits it explicitly: mypyc compiles an explicitly inherited Protocol as a trait, so the
exchange's calls stay native (a vtable call, not a Python attribute lookup).
"""

from __future__ import annotations

from typing import Protocol


class Downstream(Protocol):
    """The client's connection, as an exchange on it sees it."""

    def write(self, data: bytes) -> None:
        """Send (or collect, while corked) bytes of the response."""

    def cork(self) -> bool:
        """Start collecting writes; True if this call corked (so it is the one to uncork)."""

    def uncork(self) -> None:
        """Send what was collected, in one write."""

    def write_error(self, status: int, body: bytes, *, route: bytes) -> None:
        """Answer with the router's own JSON error, then close."""

    def abort(self) -> None:
        """Drop the connection (a response that cannot be finished)."""

    def reset(self) -> None:
        """Reset the connection (a TCP RST, no response): an injected `reset` fault."""

    def exchange_done(self, exchange: object, *, reuse: bool) -> None:
        """The response to `exchange` has been sent; `reuse`: the connection may carry the
        next one."""

    def pause_for_upstream(self, paused: bool) -> None:
        """Stop (or resume) reading the request body: the upstream cannot take it yet."""

    def is_closed(self) -> bool: ...

    def is_feeding(self) -> bool:
        """Inside a read of the client's bytes: writes to the upstream are corked until the
        read is parsed."""

    def is_http11(self) -> bool: ...


class Swept(Protocol):
    """A client connection as the router's once-a-second sweep sees it."""

    def tick(self, now: float) -> None:
        """Close it if idle too long; time out a slow client or a silent upstream."""
