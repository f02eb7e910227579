"""The downstream side: a client's connection. Parse requests (strictly, see
`sandboxd_router.intake`), route them (`sandboxd_router.routing`), and relay their exchanges in
order, one at a time (pipelined requests wait for their turn). Each exchange sees the connection
only through `boundary.Downstream`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from typing import Final, cast

import httptools

from sandboxd_router import intake, preview, record, responses, routing
from sandboxd_router.baggage import find_key
from sandboxd_router.boundary import Downstream
from sandboxd_router.errors import Refusal
from sandboxd_router.exchange import ANSWERING, HOLDING, Exchange
from sandboxd_router.faults import rpc_of
from sandboxd_router.intake import Intake
from sandboxd_router.routing import FORWARD, HOLD, Decision
from sandboxd_router.stall import StallWatch
from sandboxd_router.state import Context, RouterState

log = logging.getLogger("sandboxd_router")
MAX_PIPELINED: Final = 16  # requests queued on one connection (each parsed one: an object held)


class DownstreamConnection(Intake, Downstream, asyncio.Protocol):
    def __init__(self, state: RouterState, *, port: int | None) -> None:
        self.state = state
        self.port = port  # None: gateway mode, the Host header picks the service
        # kept: asyncio.get_running_loop() costs a getpid() system call on every call
        self.loop = asyncio.get_running_loop()
        self.context = Context(state.limits, state.sessions, state.recorder, self.loop, state.busy)
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.peer = b"unknown"
        self.http11 = True
        self.closed = False
        # (a list: a deque holds a 64-slot block from the start, 0.7 KB an idle connection)
        self.queue: list[Exchange] = []
        self.parsing: Exchange | None = None
        self._held: Exchange | None = None  # whose MCP body counts against the shared budget
        self._faulted: Decision | None = None  # the decision of `_held`, read for its faults
        self._head_bytes = 0
        self._paused_turn = False
        self._paused_upstream = False
        self._reading = True
        self._idle_since = 0.0  # loop time the connection became idle (0: busy)
        self._stall = StallWatch()
        self._refusal: tuple[int, str, str] | None = None  # sent when its request's turn comes
        self._out: list[bytes] | None = None  # corked: writes collect here until uncork()
        self.feeding = False  # inside data_received: upstream writes are corked too
        self.cookie = False  # the request whose head is read may have a preview cookie
        self._preview: preview.Preview | None = None  # that of `_held`, when it had one

    def _exchange(self) -> Exchange:
        return Exchange(self, self.peer, self.context)

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
        self.transport.write(responses.OVERLOADED)
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
        self._stall.forget()
        held, self._held = self._held, None
        if held is not None:  # an MCP body we were reading: its bytes leave the shared budget
            self.state.held_body -= held.body_size
        for ex in self.queue:
            ex.deadline = 0.0
            if ex.conn is not None:
                ex.conn.abort()  # the client went away: so does the upstream request
            ex.client_gone()
        self.queue.clear()

    def pause_writing(self) -> None:
        conn = self.queue[0].conn if self.queue else None
        if conn is not None:
            conn.pause_reading()

    def resume_writing(self) -> None:
        conn = self.queue[0].conn if self.queue else None
        if conn is not None:
            conn.resume_reading()

    # parser callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._idle_since = 0.0
        behind = bool(self.queue)  # pipelined behind an exchange in flight
        self.parsing = self._exchange()
        self.queue.append(self.parsing)
        self._head_bytes = 0
        if behind:  # read no further for now
            self._paused_turn = True
            self._update_reading()
            if len(self.queue) > MAX_PIPELINED:
                raise Refusal(429, "too_many_pipelined", "too many pipelined requests")

    def on_headers_complete(self) -> None:
        ex = self.parsing
        assert ex is not None
        parser = self.parser
        assert parser is not None  # (we are called back by it)
        self._head_read(ex, parser)
        state = self.state
        seen = None
        if self.cookie or preview.ours(ex.target):
            seen = self._preview_of(ex)
            if seen is None:
                return  # answered by the router
        decision = routing.route(
            state.table,
            state.sessions,
            port=self.port,
            host=ex.host,
            method=ex.method,
            baggage=ex.baggage,
            session=ex.session,
            has_body=intake.has_body(ex),
            preview=seen.key if seen is not None else None,
        )
        if decision.action == HOLD:
            self._preview = seen  # (for `_release`)
        elif seen is not None:
            decision = self._previewed(ex, decision, seen)
        ex.routed(decision)
        if decision.faults is not None:  # that sandbox has faults on this service
            decision = self._fault(ex, decision)
        if decision.action == FORWARD:
            if ex is self.queue[0]:
                ex.start()
        elif decision.action == HOLD:
            self._held = ex
            self._expect(ex)
        else:  # UNKNOWN: no service is routed here
            port = self.port
            where = f"port {port}" if port is not None else f"host {ex.host!r}"
            message = f"no service is routed on {where}"
            ex.fail(404 if port is None else 503, "unknown_service", message)

    def _preview_of(self, ex: Exchange) -> preview.Preview | None:
        """The request's preview cookie (taken out of its head), or None when the router
        answered the request itself (a preview link, an exit)."""
        self.cookie = False
        table = self.state.table
        seen = preview.inspect(ex.head, ex.target, ex.method, table, close=not ex.keep_alive)
        answer = seen.answer
        if answer is None:
            return seen
        # recorded as any request: the listener's service, the route the answer names
        service = routing.service_of(table, port=self.port, host=ex.host)
        ex.routed(preview.answered(seen, service))
        ex.target = seen.target
        if ex is not self.queue[0] or intake.has_body(ex):
            message = "a preview link takes a request without a body, not pipelined"
            self.reject(400, message, code="bad_request")
            return None
        ex.answered(303, answer)
        return None

    def _previewed(self, ex: Exchange, decision: Decision, seen: preview.Preview) -> Decision:
        """Routed by the cookie: the forwarded baggage names the sandbox, so the service's own
        calls stay in it. A cookie that names no live sandbox is cleared in the response (an
        extra header line after `sandboxd-route`, as faults add theirs; an MCP session started
        by it remembers only the first line, `mcp.Sessions.remember`)."""
        table = self.state.table
        route = seen.route
        if (
            route is not None
            and decision.route is route
            and find_key(ex.baggage, table.key) is None
        ):
            preview.add_baggage(ex.head, table.key + b"=" + route.key.encode())
        service = decision.service
        if seen.clear and service is not None:
            return Decision(
                decision.action,
                service,
                decision.upstream,
                decision.label + seen.clear,
                decision.sandbox,
                decision.route,
            )
        return decision

    def _fault(self, ex: Exchange, decision: Decision) -> Decision:
        """Decide the request's faults from its head; or, when a fault needs the JSON-RPC
        method (MCP), hold the body first (as rule 3 does, within the same budget)."""
        faults = decision.faults
        if faults is None or decision.action != FORWARD:
            return decision
        if faults.needs_body and ex.method == b"POST" and intake.has_body(ex):
            self._faulted = decision
            held = Decision(HOLD, decision.service)
            ex.routed(held)
            return held
        ex.verdict = faults.choose(ex.method, ex.target)
        return decision

    def _expect(self, ex: Exchange) -> None:
        """The router reads this body itself before routing: a client waiting for `100
        Continue` gets it from us, and the upstream (which gets the whole body) no Expect."""
        expect = ex.head.take(b"expect")
        first = ex is self.queue[0]  # (behind others, a 100 would interleave with their answers)
        if first and self.http11 and any(v.lower() == b"100-continue" for v in expect):
            self.write(responses.CONTINUE)

    def on_body(self, data: bytes) -> None:
        ex = self.parsing
        assert ex is not None
        ex.add_body(data)
        if ex is self._held:
            state = self.state
            state.held_body += len(data)
            limits = state.limits
            if ex.body_size > limits.mcp_body_bytes or state.held_body > limits.mcp_body_budget:
                self._release(ex, whole=False)  # too large, or too much held: route without

    def on_message_complete(self) -> None:
        ex = self.parsing
        assert ex is not None
        self.parsing = None
        if ex is self._held:
            self._release(ex, whole=True)
        ex.request_complete()

    # exchange events ----------------------------------------------------------------------
    def _release(self, ex: Exchange, *, whole: bool) -> None:
        """An MCP body has been read (or is too large to read): route it and send it."""
        self._held = None
        decision, self._faulted = self._faulted, None  # (routed by its head, held for faults)
        state = self.state
        state.held_body -= ex.body_size
        service = ex.decision.service
        if ex.phase != HOLDING or service is None:
            return  # answered meanwhile (a refusal, a timeout)
        read = whole and ex.body_size <= state.limits.mcp_body_bytes
        body = b"".join(ex.body) if read else None
        seen, self._preview = self._preview, None
        if decision is None:
            key = seen.key if seen is not None else None
            decision = routing.route_by_body(state.table, service, body, key)
            if seen is not None:
                decision = self._previewed(ex, decision, seen)
        ex.routed(decision)
        faults = decision.faults
        if faults is not None:
            rpc = rpc_of(body) if body is not None else None
            ex.verdict = faults.choose(ex.method, ex.target, rpc, read=body is not None)
            if rpc is not None:  # parsed: its facts are exact, for the request's record
                ex.rpc_method = rpc.method.encode(errors="replace")
                call = rpc.method == "tools/call" and rpc.tool
                ex.tool = rpc.tool.encode(errors="replace") if call else None
                ex.rpc_id = json.dumps(rpc.id).encode()[: record.RPC_ID]
        if ex is self.queue[0]:
            ex.start()

    def exchange_done(self, exchange: object, *, reuse: bool) -> None:
        if self.queue and self.queue[0] is exchange:
            self.queue.pop(0)
        if not reuse:
            self.close()  # (an upstream that answered before the body ended: the rest is moot)
            return
        self._paused_upstream = False
        if self.queue:
            nxt = self.queue[0]
            if self._refusal is not None and nxt is self.queue[-1]:
                nxt.fail(*self._refusal)  # a refused request's turn: answer it, and close
                self.close()
                return
            if nxt.ready():
                nxt.start()
        else:
            self._paused_turn = False
            self._idle_since = self.loop.time()
        self._update_reading()

    def pause_for_upstream(self, paused: bool) -> None:
        self._paused_upstream = paused
        self._update_reading()

    def is_closed(self) -> bool:
        return self.closed

    def is_feeding(self) -> bool:
        return self.feeding

    def is_http11(self) -> bool:
        return self.http11

    def writable(self) -> bool:
        return self.transport is not None and not self.closed

    def write_error(self, status: int, body: bytes, *, route: bytes) -> None:
        self.write(responses.error(status, body, route=route))
        self.close()

    def reject(self, status: int, message: str, *, code: str | None = None) -> None:
        """A request we refuse before routing it: 4xx (or 501), JSON, and close. Behind
        pipelined requests still being answered it waits for its turn (answered now, it would
        read as the answer to the first); nothing more is read meanwhile."""
        if self._refusal is not None:
            return  # (refused already, waiting for its turn)
        ex = self.parsing or (self.queue[-1] if self.queue else None) or self._exchange()
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

    def reset(self) -> None:
        """Close with a TCP RST: SO_LINGER 0, then close (the client sees ECONNRESET)."""
        transport = self.transport
        if transport is None or self.closed:
            return
        self.closed = True
        self._out = None  # (nothing collected may leave: there is no response)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    # helpers ----------------------------------------------------------------------------
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

    # the router's sweep (the `Swept` protocol) --------------------------------------------
    def tick(self, now: float) -> None:
        """Close an idle keep-alive connection, time out a slow client's head or stalled body
        (see `sandboxd_router.stall`), and a silent upstream."""
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
        """Only while we read: a pipelined request waiting for its turn, or a body held back
        by a slow upstream, is not the client's delay."""
        ex = self.parsing
        if ex is None or not self._reading or self.closed:
            self._stall.forget()
            return
        stalled = self._stall.check(ex, ex.body_size if ex.method else -1, now, self.state.limits)
        if stalled is not None:
            self._timed_out(ex, stalled)

    def _timed_out(self, ex: Exchange, message: str) -> None:
        """408 and close; the upstream request, if one was begun, is aborted."""
        self._stall.forget()
        conn, ex.conn = ex.conn, None
        if conn is not None:
            conn.abort()
        ex.deadline = 0.0
        if ex.phase >= ANSWERING:
            self.abort()  # the response has begun: nothing more can be said
        else:
            self.reject(408, message, code="request_timeout")
