"""Upstreams and their keep-alive connection pools.

An `UpstreamConnection` carries one exchange at a time; between exchanges it waits in its
upstream's idle list. Its response parser is made per response, so HEAD responses (which the
parser cannot know have no body) never confuse the next one. The
connection holds the parser, not the response it reports to: replacing it frees the last one
at once (a parser and its callbacks' owner referring to each other would be a cycle per request,
left to the cyclic collector).
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol, cast

import httptools

from sandboxd_router.cork import Corkable
from sandboxd_router.headers import ResponseHeaders

MAX_IDLE: Final = 256


class Receiver(Protocol):
    """The exchange an upstream connection is serving (see `sandboxd_router.exchange`)."""

    def response_head(
        self, status: int, reason: bytes, head: ResponseHeaders, *, body: str
    ) -> None: ...
    def response_interim(self, status: int, reason: bytes) -> None: ...
    def response_body(self, data: bytes) -> None: ...
    def response_end(self) -> None: ...
    def upstream_failed(self, error: str) -> None: ...
    def upstream_pause(self, paused: bool) -> None: ...
    def cork(self) -> bool: ...
    def uncork(self) -> None: ...


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


class UpstreamConnection(Corkable, asyncio.Protocol):
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None
        self.response: _Response | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.closed = False
        self.reused = False
        self._out: list[bytes] | None = None

    @property
    def receiver(self) -> Receiver | None:
        return self.response.receiver if self.response is not None else None

    # lifecycle --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def writable(self) -> bool:
        return not self.closed and self.transport is not None  # (every close sets `closed`)

    def start(self, receiver: Receiver, *, head_only: bool) -> None:
        response = _Response(self, receiver, head_only=head_only)
        self.parser = httptools.HttpResponseParser(response)
        self.response = response

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """The client went away mid-exchange: drop the connection, so the upstream sees it."""
        if self.response is not None:
            self.response.receiver = None
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self in self.upstream.idle:
            self.upstream.idle.remove(self)
        self.parser = None  # (it refers back to us: a cycle the collector would have to find)
        response, self.response = self.response, None
        if response is not None:
            response.lost(exc)

    def pause_reading(self) -> None:
        """Backpressure from the client, honoured only while a response is being read: the
        exchange may flush its last bytes (and be told to pause) after the response ended and
        the connection went back to the pool, where it must keep reading."""
        transport = self.transport
        if self.response is not None and transport is not None and not transport.is_closing():
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def pause_writing(self) -> None:
        if self.receiver is not None:
            self.receiver.upstream_pause(True)

    def resume_writing(self) -> None:
        if self.receiver is not None:
            self.receiver.upstream_pause(False)

    def data_received(self, data: bytes) -> None:
        response = self.response
        parser = self.parser
        if response is None or parser is None:
            self.close()  # bytes nobody asked for
            return
        receiver = response.receiver
        corked = receiver.cork() if receiver is not None else False
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as e:
            failed, response.receiver = response.receiver, None
            self.close()
            if failed is not None:
                failed.upstream_failed(f"malformed response from the upstream: {e}")
        finally:
            if corked and receiver is not None:
                receiver.uncork()

    def finished(self, response: _Response, *, keep: bool) -> None:
        if self.response is response:
            self.response = None
        if keep and self.usable():
            self.reused = True
            # the client's backpressure may have paused it in the very read that ended the
            # response: in the pool it must read (the next answer, or the upstream's close)
            self.resume_reading()
            self.upstream.put_idle(self)
        else:
            self.close()


class _Response:
    """One response's parser callbacks. A fresh object per response, so that whatever the old
    parser still reports (bytes after a HEAD answer, say) can never reach the next exchange."""

    __slots__ = ("conn", "got_head", "head", "head_only", "interim", "reason", "receiver",
                 "until_close")  # fmt: skip

    def __init__(self, conn: UpstreamConnection, receiver: Receiver, *, head_only: bool) -> None:
        self.conn = conn
        self.receiver: Receiver | None = receiver
        self.head_only = head_only
        self.interim = False
        self.got_head = False
        self.until_close = False
        self.reason = b""
        self.head = ResponseHeaders()

    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head.add(name, value)

    def on_headers_complete(self) -> None:
        if self.receiver is None:
            return
        status = self._parser().get_status_code()
        head = self.head
        if 100 <= status < 200 and status != 101:
            self.interim = True
            self.head = ResponseHeaders()  # the final response's headers come next
            self.receiver.response_interim(status, self.reason)
            return
        self.got_head = True
        body = _body_kind(status, head, head_only=self.head_only)
        self.until_close = body == "close"
        self.receiver.response_head(status, self.reason, head, body=body)
        if body == "none" and self.head_only:
            self._finish(keep=self._parser().should_keep_alive())

    def on_body(self, data: bytes) -> None:
        if self.receiver is not None:
            self.receiver.response_body(data)

    def on_message_complete(self) -> None:
        if self.interim:
            # the final response follows on the same parser (llhttp starts a new message):
            # a fresh parser here would miss what is left of this very read — unless the 1xx
            # said `Connection: close`, after which llhttp refuses anything more
            self.interim = False
            if not self._parser().should_keep_alive():
                self.conn.parser = httptools.HttpResponseParser(self)
            return
        if self.receiver is not None:
            self._finish(keep=self._parser().should_keep_alive() and not self.until_close)

    def _parser(self) -> httptools.HttpResponseParser:
        parser = self.conn.parser
        assert parser is not None  # (we are called back by it)
        return parser

    def _finish(self, *, keep: bool) -> None:
        receiver, self.receiver = self.receiver, None
        self.conn.finished(self, keep=keep)
        if receiver is not None:
            receiver.response_end()

    def lost(self, exc: Exception | None) -> None:
        receiver, self.receiver = self.receiver, None
        if receiver is None:
            return
        if self.got_head and self.until_close:
            receiver.response_end()  # a body delimited by the connection's end
        else:
            receiver.upstream_failed(
                "the upstream closed the connection" if exc is None else str(exc)
            )


def _body_kind(status: int, head: ResponseHeaders, *, head_only: bool) -> str:
    """ "none", "length", "chunked" or "close": how the upstream delimits this body."""
    if head_only or status in (204, 304):
        return "none"
    if head.chunked:
        return "chunked"
    return "length" if head.length is not None else "close"
