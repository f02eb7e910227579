"""Upstreams and their keep-alive connection pools.

An `UpstreamConnection` carries one exchange at a time; between exchanges it waits in its
upstream's idle list. Its response parser is made per response, so HEAD responses (which the
parser cannot know have no body) and interim 1xx responses never confuse the next one.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

import httptools

MAX_IDLE = 256


class Receiver(Protocol):
    """The exchange an upstream connection is serving (see `sandboxd_router.exchange`)."""

    def response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], *, body: str
    ) -> None: ...
    def response_interim(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None: ...
    def response_body(self, data: bytes) -> None: ...
    def response_end(self) -> None: ...
    def upstream_failed(self, error: str) -> None: ...
    def upstream_pause(self, paused: bool) -> None: ...


class Upstream:
    __slots__ = ("authority", "host", "idle", "port")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.authority = f"{host}:{port}".encode()
        self.idle: list[UpstreamConnection] = []

    def __repr__(self) -> str:
        return f"Upstream(http://{self.host}:{self.port})"

    def take_idle(self) -> UpstreamConnection | None:
        while self.idle:
            conn = self.idle.pop()
            if conn.usable():
                return conn
        return None

    def put_idle(self, conn: UpstreamConnection) -> None:
        if len(self.idle) < MAX_IDLE:
            self.idle.append(conn)
        else:
            conn.close()

    async def connect(self, timeout: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port), timeout
        )
        return conn

    def close_idle(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None
        self.receiver: Receiver | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.closed = False
        self.reused = False
        self._head_only = False
        self._interim = False
        self._got_head = False
        self._until_close = False
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []

    # lifecycle --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def start(self, receiver: Receiver, *, head_only: bool) -> None:
        self.receiver = receiver
        self.parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self._got_head = False
        self._until_close = False
        self._headers = []

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """The client went away mid-exchange: drop the connection, so the upstream sees it."""
        self.receiver = None
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self in self.upstream.idle:
            self.upstream.idle.remove(self)
        receiver, self.receiver = self.receiver, None
        if receiver is None:
            return
        if self._got_head and self._until_close:
            receiver.response_end()  # a body delimited by the connection's end
        else:
            receiver.upstream_failed(
                "the upstream closed the connection" if exc is None else str(exc)
            )

    def pause_writing(self) -> None:
        if self.receiver is not None:
            self.receiver.upstream_pause(True)

    def resume_writing(self) -> None:
        if self.receiver is not None:
            self.receiver.upstream_pause(False)

    # parsing ----------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.parser is None:
            self.close()  # bytes nobody asked for
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            receiver, self.receiver = self.receiver, None
            self.close()
            if receiver is not None:
                receiver.upstream_failed(f"malformed response from the upstream: {e}")

    def on_status(self, reason: bytes) -> None:
        self._reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        assert self.receiver is not None
        status = self.parser.get_status_code()
        headers, self._headers = self._headers, []
        if 100 <= status < 200 and status != 101:
            self._interim = True
            self.receiver.response_interim(status, self._reason, headers)
            return
        self._got_head = True
        body = _body_kind(status, headers, head_only=self._head_only)
        self._until_close = body == "close"
        self.receiver.response_head(status, self._reason, headers, body=body)
        if body == "none" and self._head_only:
            self._finish(keep=self.parser.should_keep_alive())

    def on_body(self, data: bytes) -> None:
        if self.receiver is not None:
            self.receiver.response_body(data)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self.parser = httptools.HttpResponseParser(self)
            return
        if self.parser is not None and self.receiver is not None:
            self._finish(keep=self.parser.should_keep_alive() and not self._until_close)

    def _finish(self, *, keep: bool) -> None:
        receiver, self.receiver = self.receiver, None
        self.parser = None
        if keep and self.usable():
            self.reused = True
            self.upstream.put_idle(self)
        else:
            self.close()
        if receiver is not None:
            receiver.response_end()


def _body_kind(status: int, headers: list[tuple[bytes, bytes]], *, head_only: bool) -> str:
    """ "none", "length", "chunked" or "close": how the upstream delimits this body."""
    if head_only or status in (204, 304):
        return "none"
    kind = "close"
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding" and value.lower().rstrip().endswith(b"chunked"):
            return "chunked"
        if lower == b"content-length":
            kind = "length"
    return kind
