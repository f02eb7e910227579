"""A client's connection: parse requests (strictly), route them, relay exchanges in order.

Request smuggling is refused before anything reaches an upstream: the parser (llhttp, strict)
rejects conflicting or duplicate Content-Length, Content-Length with Transfer-Encoding, bad chunk
sizes and obsolete line folding; we add the checks it leaves to us (HTTP/0.9 request lines, a
Transfer-Encoding other than `chunked`, the header size limit). A refused request gets a 4xx and
the connection is closed, so no second request can hide behind it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from http import HTTPStatus
from typing import cast

import httptools

from sandboxd_router import routing, target
from sandboxd_router.cork import Corkable
from sandboxd_router.errors import Refusal
from sandboxd_router.exchange import Exchange
from sandboxd_router.state import RouterState

log = logging.getLogger("sandboxd_router")
OVERLOADED_BODY = (
    b'{"error": "overloaded", "message": "the router holds as many connections as it may; '
    b'retry shortly", "sandbox": null, "service": null}'
)
OVERLOADED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nsandboxd-route: baseline\r\n"
    b"Connection: close\r\n\r\n%b" % (len(OVERLOADED_BODY), OVERLOADED_BODY)
)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
MAX_PIPELINED = 16  # requests queued on one connection (each parsed one is an object held)


class ClientConnection(Corkable, asyncio.Protocol):
    def __init__(self, state: RouterState, *, port: int | None) -> None:
        self.state = state
        self.port = port  # None: gateway mode, the Host header picks the service
        # kept: asyncio.get_running_loop() costs a getpid() system call on every call
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.peer = b"unknown"
        self.http11 = True
        self.closed = False
        self.queue: deque[Exchange] = deque()
        self.parsing: Exchange | None = None
        self._head_bytes = 0
        self._paused_turn = False
        self._paused_upstream = False
        self._reading = True
        self._idle_since = 0.0  # loop time the connection became idle (0: busy)
        # what the sweep saw the client send last: a head or body that makes no progress
        # between sweeps is timed out there, so a request costs no timer and no clock read
        self._watched: Exchange | None = None
        self._progress = -1  # bytes of the watched body (-1: its head is not whole yet)
        self._since = 0.0
        self._refusal: tuple[int, str, str] | None = None  # sent when its request's turn comes
        self._out: list[bytes] | None = None  # corked: writes collect here until uncork()
        self.feeding = False  # inside data_received: upstream writes are corked too

    # transport events -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        state = self.state
        if len(state.connections) >= state.limits.max_connections:
            self._refuse()
            return
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0]).encode()
        state.connections.add(self)
        # a new connection must start its first request within the head deadline: it counts
        # as idle for as long already as the idle deadline exceeds the head deadline
        limits = state.limits
        self._idle_since = self.loop.time() - max(0.0, limits.idle_timeout - limits.head_timeout)

    def _refuse(self) -> None:
        """Over the connection limit: a 503 at once, nothing read, and close (existing
        connections are untouched; this one never counts)."""
        assert self.transport is not None
        self.parser = None
        self.closed = True
        self.transport.write(OVERLOADED)
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.feeding = True
        try:
            self._feed(data)
        finally:
            self.feeding = False
            for ex in self.queue:  # one write per upstream per read, not one per callback
                if ex.conn is not None:
                    ex.conn.uncork()

    def _feed(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:
            return  # (closed)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.reject(501, "protocol upgrades (such as WebSocket) are not supported")
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, Refusal):
                self.reject(cause.status, str(cause), code=cause.code)
            elif isinstance(cause, httptools.HttpParserError):  # our own checks, in a callback
                self.reject(400, f"malformed request: {cause}")
            else:
                self._internal_error(cause or e)
        except httptools.HttpParserError as e:
            self.reject(400, f"malformed request: {e}")
        except Exception as e:
            self._internal_error(e)

    def _internal_error(self, error: BaseException) -> None:
        """A bug of ours: log it, answer, and never leave the client hanging."""
        log.error("unexpected error while relaying a request", exc_info=error)
        self.reject(502, "the router failed on this request (see its log)", code="router_error")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.parser = None  # (it refers back to us: a cycle the collector would have to find)
        self.state.connections.discard(self)
        self._watched = None
        for ex in self.queue:
            ex.deadline = 0.0
            if ex.hold:  # an MCP body we were reading: its bytes leave the shared budget
                ex.hold = False
                self.state.held_body -= ex.body_size
            if ex.conn is not None:
                ex.conn.abort()  # the client went away: so does the upstream request
        self.queue.clear()

    def pause_writing(self) -> None:
        conn = self.queue[0].conn if self.queue else None
        if conn is not None and conn.transport is not None:
            conn.transport.pause_reading()

    def resume_writing(self) -> None:
        conn = self.queue[0].conn if self.queue else None
        if conn is not None and conn.transport is not None:
            conn.transport.resume_reading()

    # parser callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._idle_since = 0.0
        behind = bool(self.queue)  # pipelined behind an exchange in flight
        self.parsing = Exchange(self)
        self.queue.append(self.parsing)
        self._head_bytes = 0
        if behind:  # read no further for now
            self._paused_turn = True
            self._update_reading()
            if len(self.queue) > MAX_PIPELINED:
                raise Refusal(429, "too_many_pipelined", "too many pipelined requests")

    def on_url(self, url: bytes) -> None:
        assert self.parsing is not None
        self.parsing.target += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.parsing
        assert ex is not None
        self._count(len(name) + len(value) + 4)
        lower = name.lower()
        ex.head.add(name, value, lower)
        if lower == b"baggage":
            ex.baggage.append(value)
        elif lower == b"host":
            if ex.host is not None:  # RFC 9112 §3.2: which one would the upstream believe?
                raise httptools.HttpParserError("more than one Host header")
            ex.host = value
        elif lower == b"content-length":
            ex.content_length = value
        elif lower == b"transfer-encoding":
            if ex.chunked or value.strip().lower() != b"chunked":
                raise httptools.HttpParserError("unsupported Transfer-Encoding (only chunked)")
            ex.chunked = True
        elif lower == b"mcp-session-id":
            ex.session = value
        elif lower == b"traceparent":
            ex.traceparent = value

    def on_headers_complete(self) -> None:
        ex = self.parsing
        assert ex is not None
        parser = self.parser
        assert parser is not None  # (we are called back by it)
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise httptools.HttpParserError(f"HTTP/{version} is not supported")
        self.http11 = version == "1.1"
        ex.method = parser.get_method()
        ex.keep_alive = parser.should_keep_alive()
        if ex.host is None and self.http11:
            raise httptools.HttpParserError("an HTTP/1.1 request needs a Host header")
        if not ex.target.startswith(b"/"):
            self._other_form(ex)
        routing.route(self.state, ex, port=self.port)
        if ex.hold:
            self._expect(ex)
        elif ex is self.queue[0] and not ex.responded:
            ex.start()

    def _other_form(self, ex: Exchange) -> None:
        """An absolute-form target goes upstream origin-form, its authority standing in for
        Host (RFC 9112 §3.2.2); `OPTIONS *` passes; anything else is refused."""
        if ex.target == b"*" and ex.method == b"OPTIONS":
            return
        parts = target.origin_form(ex.target)
        if parts is None:
            raise httptools.HttpParserError("the request target is neither /path nor http://…")
        ex.host, ex.target = parts

    def _expect(self, ex: Exchange) -> None:
        """The router reads this body itself before routing: a client waiting for `100
        Continue` gets it from us, and the upstream (which gets the whole body) no Expect."""
        expect = ex.head.take(b"expect")
        first = ex is self.queue[0]  # (behind others, a 100 would interleave with their answers)
        if first and self.http11 and any(v.lower() == b"100-continue" for v in expect):
            self.write(CONTINUE)

    def on_body(self, data: bytes) -> None:
        ex = self.parsing
        assert ex is not None
        ex.add_body(data)
        if ex.hold:
            state = self.state
            state.held_body += len(data)
            limits = state.limits
            if ex.body_size > limits.mcp_body_bytes or state.held_body > limits.mcp_body_budget:
                self._release(ex, whole=False)  # too large, or too much held: route without

    def on_message_complete(self) -> None:
        ex = self.parsing
        assert ex is not None
        self.parsing = None
        if ex.hold:
            self._release(ex, whole=True)
        if not ex.responded:
            ex.request_complete()

    # exchange events ----------------------------------------------------------------------
    def _release(self, ex: Exchange, *, whole: bool) -> None:
        """An MCP body has been read (or is too large to read): route it and send it."""
        self.state.held_body -= ex.body_size
        routing.route_by_body(self.state, ex, whole=whole)
        if ex is self.queue[0] and not ex.responded:
            ex.start()

    def exchange_done(self, ex: Exchange) -> None:
        if self.queue and self.queue[0] is ex:
            self.queue.popleft()
        if ex.close_after or not ex.keep_alive or not ex.complete:
            self.close()  # (an upstream that answered before the body ended: the rest is moot)
            return
        self._paused_upstream = False
        if self.queue:
            nxt = self.queue[0]
            if self._refusal is not None and nxt is self.queue[-1]:
                nxt.fail(*self._refusal)  # a refused request's turn: answer it, and close
                self.close()
                return
            if nxt.upstream is not None and not nxt.hold and nxt.conn is None and not nxt.responded:
                nxt.start()
        else:
            self._paused_turn = False
            self._idle_since = self.loop.time()
        self._update_reading()

    def pause_for_upstream(self, paused: bool) -> None:
        self._paused_upstream = paused
        self._update_reading()

    def writable(self) -> bool:
        return self.transport is not None and not self.closed

    def write_error(self, status: int, body: bytes, *, route: bytes) -> None:
        phrase = HTTPStatus(status).phrase.encode()
        self.write(
            b"HTTP/1.1 %d %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"sandboxd-route: %b\r\nConnection: close\r\n\r\n%b"
            % (status, phrase, len(body), route, body)
        )
        self.close()

    def reject(self, status: int, message: str, *, code: str | None = None) -> None:
        """A request we refuse before routing it: 4xx (or 501), JSON, and close. Behind
        pipelined requests still being answered it waits for its turn (answered now, it would
        read as the answer to the first); nothing more is read meanwhile."""
        if self._refusal is not None:
            return  # (refused already, waiting for its turn)
        ex = self.parsing or (self.queue[-1] if self.queue else None) or Exchange(self)
        code = code or ("bad_request" if status < 500 else "not_implemented")
        if self.queue and ex is not self.queue[0] and ex is self.queue[-1]:
            self.parser = None
            self._refusal = (status, code, message)
            self._paused_turn = True
            self._update_reading()
            return
        ex.fail(status, code, message)
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.uncork()
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    # helpers ----------------------------------------------------------------------------
    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.state.limits.max_header_bytes:
            raise Refusal(431, "bad_request", "request headers are larger than the limit")

    def _update_reading(self) -> None:
        """Pause or resume reading, calling the transport only on a change (each is a syscall)."""
        if self.transport is None or self.closed:
            return
        reading = not (self._paused_turn or self._paused_upstream)
        if reading != self._reading:
            self._reading = reading
            if reading:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def tick(self, now: float) -> None:
        """The router's sweep: close an idle keep-alive connection, time out a slow client's
        head or stalled body, and a silent upstream."""
        limits = self.state.limits
        if self._idle_since:
            if now - self._idle_since > limits.idle_timeout:
                self.close()
            return
        self._watch(now)
        for ex in self.queue:
            if ex.deadline and now > ex.deadline:
                ex.timed_out()

    def _watch(self, now: float) -> None:
        """A head must be whole within `head_timeout` of the sweep that first saw it; a body
        must move within `body_timeout`. Only while we read: a pipelined request waiting for
        its turn, or a body held back by a slow upstream, is not the client's delay."""
        ex = self.parsing
        if ex is None or not self._reading or self.closed:
            self._watched = None
            return
        progress = ex.body_size if ex.method else -1
        if ex is not self._watched or progress != self._progress:
            self._watched, self._progress, self._since = ex, progress, now
            return
        limits = self.state.limits
        if progress < 0 and now - self._since > limits.head_timeout:
            self._timed_out(ex, "the request head did not arrive in time")
        elif progress >= 0 and now - self._since > limits.body_timeout:
            self._timed_out(ex, "the request body stalled")

    def _timed_out(self, ex: Exchange, message: str) -> None:
        """408 and close; the upstream request, if one was begun, is aborted."""
        self._watched = None
        conn, ex.conn = ex.conn, None
        if conn is not None:
            conn.abort()
        ex.deadline = 0.0
        if ex.responded:
            self.abort()  # the response has begun: nothing more can be said
        else:
            self.reject(408, message, code="request_timeout")
