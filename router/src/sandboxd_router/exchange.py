"""One request and its response, from the client's connection to an upstream and back.

Nothing is buffered that can be streamed: request body chunks go to the upstream as they arrive
(held only while the upstream connection is being opened, or while an MCP body is read to find
its routing key), and response bytes go to the client as the upstream sends them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Final

from sandboxd_router import headers as h
from sandboxd_router import injection, mcp, record, rewrite
from sandboxd_router.boundary import Downstream
from sandboxd_router.faults import Verdict
from sandboxd_router.routing import HOLD, NOWHERE, Decision
from sandboxd_router.state import Context
from sandboxd_router.upstream import UpstreamConnection

log = logging.getLogger("sandboxd_router")
# a request this small is kept until answered, to retry a stale socket
REPLAY_LIMIT: Final = 64 * 1024
PENDING_LIMIT: Final = 256 * 1024  # body bytes kept before an upstream connection takes them

# An exchange's life (`Exchange.phase`). It goes back only from HOLDING, once the body routed it:
#   READING ──(HOLD decision)──> HOLDING ──(routed by its body)──> READING
#   READING ──(request whole)──> SENT ──(response head)──> ANSWERING ──(response end)──> DONE
#   READING ──(response head before the request is whole: close after)──> ANSWERING
#   any phase before ANSWERING ──(fail: our own error response)──> DONE
#   ANSWERING ──(the upstream lost mid-response: the client's connection is reset)──> DONE
READING: Final = 0  # the request is being read (its head, then its body)
HOLDING: Final = 1  # an MCP body read whole before routing (rule 3, `routing.HOLD`)
SENT: Final = 2  # the request is whole; its response is due
ANSWERING: Final = 3  # the response has begun: nothing else can be said to the client
DONE: Final = 4  # answered, or failed with our own error
TICK: Final = 0.001  # the event loop's timer grain (uvloop: a millisecond)


class Exchange:
    __slots__ = (
        "baggage",
        "body",
        "body_size",
        "bytes_out",
        "chunked",
        "client_chunked",
        "conn",
        "content_length",
        "context",
        "deadline",
        "decision",
        "downstream",
        "due",
        "head",
        "held",
        "host",
        "injected_at",
        "keep_alive",
        "mcp",
        "method",
        "paced",
        "peer",
        "phase",
        "protocol",
        "replay",
        "replay_size",
        "rpc_id",
        "rpc_method",
        "seen",
        "session",
        "started",
        "status",
        "target",
        "task",
        "tool",
        "traceparent",
        "verdict",
    )  # fmt: skip

    def __init__(self, downstream: Downstream, peer: bytes, context: Context) -> None:
        self.downstream = downstream
        self.peer = peer  # the client's address (X-Forwarded-For)
        self.context = context
        self.method = b""
        self.target = b""
        self.head = h.RequestHeaders()
        self.baggage: list[bytes] = []
        self.host: bytes | None = None
        self.session: bytes | None = None
        self.protocol: bytes | None = None  # MCP-Protocol-Version
        self.traceparent: bytes | None = None
        self.content_length: bytes | None = None
        self.chunked = False
        self.keep_alive = True
        """The connection may carry another exchange after this one (the request asks it; the
        response's framing, or a response before the request was whole, may deny it)."""
        self.phase = READING
        self.body: list[bytes] = []
        self.body_size = 0
        self.decision: Decision = NOWHERE
        self.conn: UpstreamConnection | None = None
        self.replay: list[bytes] | None = []
        self.replay_size = 0
        self.started = time.perf_counter()
        self.status = 0
        self.bytes_out = 0
        self.client_chunked = False
        self.deadline = 0.0  # loop time by which the response head is due (0: not waiting)
        self.task: asyncio.Future[None] | None = None  # a connect in progress (kept from GC)
        self.verdict: Verdict | None = None  # the faults this request triggered (rarely any)
        self.due = False  # an injected answer waits for the request's last byte
        self.held: Held | None = None  # a response buffered to be rewritten (rarely)
        self.paced: rewrite.Paced | None = None  # a response held back piece by piece (rarer)
        # for the request's record (`sandboxd_router.record`)
        self.mcp = False  # routed to an MCP service: its JSON-RPC facts are recorded
        self.rpc_method: bytes | None = None
        self.tool: bytes | None = None
        self.rpc_id: bytes | None = None
        self.seen = 0  # what the response showed (`mcp.scan_response`)
        self.injected_at = 0.0  # seconds after `started` when the (last) fault took effect

    def routed(self, decision: Decision) -> None:
        """Take the routing decision: hold the body for it, or be ready to go upstream."""
        self.decision = decision
        self.phase = HOLDING if decision.action == HOLD else READING
        service = decision.service
        self.mcp = service is not None and service.is_mcp

    def ready(self) -> bool:
        """Routed to an upstream and not yet sent there (its turn may come)."""
        return self.phase <= SENT and self.decision.upstream is not None and self.conn is None

    # request side -----------------------------------------------------------------------
    def start(self) -> None:
        """Send the request upstream, on a pooled connection when one is idle (or apply the
        faults it triggered)."""
        if self.verdict is not None:
            self._start_faulted(self.verdict)
            return
        self._start()

    def _start(self) -> None:
        upstream = self.decision.upstream
        assert upstream is not None
        conn = upstream.take_idle()
        if conn is not None:
            self._attach(conn)
        else:
            self.task = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        upstream = self.decision.upstream
        assert upstream is not None
        try:
            conn = await upstream.connect(self.context.limits.connect_timeout)
        except (OSError, TimeoutError) as e:
            reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
            self.fail(502, "upstream_unreachable", f"cannot connect to {upstream!r}: {reason}")
            return
        if self.downstream.is_closed():
            conn.close()
            return
        self._attach(conn)

    def _attach(self, conn: UpstreamConnection) -> None:
        if not conn.usable():
            # closed between connect and now (a fork being stopped, say): nobody else will
            # report it, since its connection_lost ran before this exchange was attached
            self.fail(502, "upstream_failed", f"{conn.upstream!r} closed the connection at once")
            return
        self.conn = conn
        conn.start(self, head_only=self.method == b"HEAD")
        framing = (
            h.CHUNKED
            if self.chunked
            else (h.content_length(self.content_length) if self.content_length else b"")
        )
        head = self.head.render(
            self.method,
            self.target,
            authority=conn.upstream.authority,
            client=self.peer,
            original_host=self.host,
            framing=framing,
        )
        corked = conn.cork()
        self._send(head)
        body, self.body = self.body, []
        for data in body:
            self._send(h.chunk(data) if self.chunked else data)
        if self.body_size > PENDING_LIMIT:
            self.downstream.pause_for_upstream(False)  # (paused by add_body, perhaps)
        if self.phase == SENT:
            self._request_sent()
        if corked and not self.downstream.is_feeding():
            conn.uncork()

    def add_body(self, data: bytes) -> None:
        if not self.body_size and self.mcp:
            self.rpc_method, self.tool, self.rpc_id = mcp.request_facts(data)
        self.body_size += len(data)
        if self.conn is not None:
            self._send(h.chunk(data) if self.chunked else data)
        else:
            verdict = self.verdict
            if verdict is not None and verdict.answer is not None:
                return  # answered by the router: the body goes nowhere
            self.body.append(data)
            if self.body_size > PENDING_LIMIT and self.phase != HOLDING:
                # no upstream to take it yet (still connecting): read no more until one does,
                # or a fast client would fill our memory for as long as the connect takes
                self.downstream.pause_for_upstream(True)

    def request_complete(self) -> None:
        """The client has sent the whole request (nothing to do once it is answered)."""
        if self.phase != READING:
            return
        self.phase = SENT
        if self.conn is not None:
            self._request_sent()
        elif self.due:
            self._answer()

    def _request_sent(self) -> None:
        if self.chunked:
            self._send(h.LAST_CHUNK)
        self._await_head()
        context = self.context
        busy = context.busy
        if busy.seconds and not busy.spinning:
            busy.spinning = True
            loop = context.loop
            loop.call_soon(self._spin, loop, loop.time() + busy.seconds)

    def _spin(self, loop: asyncio.AbstractEventLoop, until: float) -> None:
        """Keep the loop polling (epoll with no timeout) until the answer comes or `until`: an
        upstream on loopback answers within tens of microseconds, and sleeping in between costs
        a wake-up of about as much on a virtual machine. One spinner at a time, bounded.

        With recording on, each turn first offers the core to the telemetry process (beside
        the router, on its core): a spinning router never sleeps, so the telemetry process
        otherwise gets its turn only by preempting the router's work, not the time it spends
        waiting. With nothing else runnable, the yield returns at once."""
        if self.phase < ANSWERING and self.conn is not None and loop.time() < until:
            if self.context.recorder is not None:
                os.sched_yield()
            loop.call_soon(self._spin, loop, until)
        else:
            self.context.busy.spinning = False

    def _send(self, data: bytes) -> None:
        conn = self.conn
        assert conn is not None
        if self.downstream.is_feeding():
            conn.cork()  # the client's data_received uncorks it when its read is parsed
        conn.write(data)
        if self.replay is not None:
            self.replay.append(data)
            self.replay_size += len(data)
            if self.replay_size > REPLAY_LIMIT:
                self.replay = None

    # response side (the Receiver protocol) ----------------------------------------------
    def response_interim(self, status: int, reason: bytes) -> None:
        self.downstream.write(b"HTTP/1.1 %d %b\r\n\r\n" % (status, reason))

    def response_head(
        self, status: int, reason: bytes, head: h.ResponseHeaders, *, body: str
    ) -> None:
        self.deadline = 0.0
        self.replay = None
        self.status = status
        framing = b""
        if body in ("chunked", "close"):
            if self.downstream.is_http11():
                framing, self.client_chunked = h.CHUNKED, True
            else:
                self.keep_alive = False  # an HTTP/1.0 client: the end of the body is the close
        service = self.decision.service
        if service is not None and service.is_mcp:
            self._track_session(status, head.session)
        verdict = self.verdict
        if verdict is not None and verdict.rewrite is not None:
            if not (200 <= status < 300 and body != "none"):
                verdict.rewrite = None  # an error or no body: passed untouched
            elif verdict.rewrite.kind == "slow_stream":
                delay = (verdict.rewrite.chunk_delay_ms or 0) / 1000
                self.paced = rewrite.Paced(delay, sse=head.value(b"content-type") or b"")
                self._injected()
            else:
                self.held = Held(status, reason, head, framing)  # its length will change
        if self.held is None:
            self._write_head(status, reason, head, framing)
        if self.phase != SENT:
            self.keep_alive = False  # answered before the request was whole: the rest is moot
        self.phase = ANSWERING

    def _write_head(
        self, status: int, reason: bytes, head: h.ResponseHeaders, framing: bytes
    ) -> None:
        label = self.decision.label
        if self.verdict is not None:  # the real response (perhaps rewritten), marked as faulted
            names = self.verdict.headers()
            if names:
                label += b"\r\n" + names[:-2]
        self.downstream.write(
            head.render(status, reason, route=label, framing=framing, close=not self.keep_alive)
        )

    def response_body(self, data: bytes) -> None:
        paced = self.paced
        if paced is not None:
            if paced.add(data):
                self._later(paced.delay, self._pace)
            if paced.size > rewrite.LIMIT:
                self._read_upstream(False)  # held back faster than let out: read no more
            return
        held = self.held
        if held is not None:
            held.add(data)
            if held.size > rewrite.LIMIT:
                self._unrewritten(held)
            return
        if self.mcp:
            self.seen = mcp.scan_response(data, self.seen)
        self.bytes_out += len(data)
        self.downstream.write(h.chunk(data) if self.client_chunked else data)

    def response_end(self) -> None:
        if self.held is not None:
            self._rewrite(self.held)
        paced = self.paced
        if paced is not None:
            self._read_upstream(True)  # (paused, perhaps: the body is whole)
            self.conn = None  # (released already: its next exchange may begin)
            if paced.end():
                self._later(paced.delay, self._pace)
            if paced.pending():
                return  # `_pace` ends the response after its last piece
            self.paced = None
        self._end()

    def _end(self) -> None:
        downstream = self.downstream
        if self.client_chunked:
            downstream.write(h.LAST_CHUNK)
        downstream.uncork()  # the response leaves now: our bookkeeping is off the client's clock
        self.conn = None
        self.phase = DONE
        self._record()
        downstream.exchange_done(self, reuse=self.keep_alive)

    def upstream_failed(self, error: str) -> None:
        conn, self.conn = self.conn, None
        self.deadline = 0.0
        if self.phase == SENT and conn is not None and conn.reused and self.replay is not None:
            self._retry()
            return
        if self.phase >= ANSWERING:
            self.phase = DONE
            self._record(whole=False)
            self.downstream.abort()
        else:
            self.fail(502, "upstream_failed", error)

    def cork(self) -> bool:
        return self.downstream.cork()

    def uncork(self) -> None:
        self.downstream.uncork()

    def upstream_pause(self, paused: bool) -> None:
        self.downstream.pause_for_upstream(paused)

    def _retry(self) -> None:
        """A pooled connection the upstream had closed: send the same bytes on a new one."""
        sent, self.replay = self.replay or [], None

        async def again() -> None:
            upstream = self.decision.upstream
            assert upstream is not None
            try:
                conn = await upstream.connect(self.context.limits.connect_timeout)
            except (OSError, TimeoutError) as e:
                self.fail(502, "upstream_unreachable", f"cannot connect to {upstream!r}: {e}")
                return
            if not conn.usable():
                self.fail(
                    502, "upstream_failed", f"{conn.upstream!r} closed the connection at once"
                )
                return
            self.conn = conn
            conn.start(self, head_only=self.method == b"HEAD")
            for data in sent:
                conn.write(data)
            self._await_head()

        self.task = asyncio.ensure_future(again())

    def _track_session(self, status: int, started: bytes | None) -> None:
        """Remember where a session started; forget it when it ends (DELETE, or a 404)."""
        sessions = self.context.sessions
        if self.session is not None:
            if status == 404 or (self.method == b"DELETE" and status < 300):
                sessions.forget(self.session)
            return
        upstream = self.decision.upstream
        if started is not None and upstream is not None:
            route = self.decision.route
            sandbox = route.sandbox if route is not None else None
            sessions.remember(started, upstream, self.decision.label, sandbox)

    # faults (`sandboxd_router.faults`) ------------------------------------------------------
    def _start_faulted(self, verdict: Verdict) -> None:
        """Latency first (a timer, not a sleeping task), then the upstream or our answer."""
        delay = verdict.latency_ms / 1000
        if verdict.delayed:
            self._injected()
        fault = verdict.answer
        if fault is None:
            then = self._after_latency
        elif fault.kind == "timeout":
            then = self._answer
            wait = fault.latency_ms
            delay += wait / 1000 if wait is not None else self.context.limits.upstream_timeout
        else:
            then = self._answer
        self._later(delay, then)

    def _later(self, delay: float, then: Callable[[], None]) -> None:
        """Call `then` `delay` seconds from now, never sooner. A loop timer alone may fire a
        little early (uvloop's are millisecond-grained and count from the loop's cached time):
        it is armed again for what is left, at least a tick, until the clock says it is time."""
        self.context.loop.call_later(delay, self._when_due, time.perf_counter() + delay, then)

    def _when_due(self, due: float, then: Callable[[], None]) -> None:
        left = due - time.perf_counter()
        if left > 0:
            self.context.loop.call_later(max(left, TICK), self._when_due, due, then)
        else:
            then()

    def _after_latency(self) -> None:
        if not self.downstream.is_closed() and self.phase <= SENT:
            self._start()

    def _answer(self) -> None:
        """Answer with the fault (once the request is whole: the connection stays usable)."""
        verdict = self.verdict
        if verdict is None or verdict.answer is None:
            return
        if self.downstream.is_closed() or self.phase >= ANSWERING:
            return
        if self.phase < SENT:
            self.due = True  # request_complete() calls again
            return
        self.phase = DONE
        self._injected()
        if verdict.answer.kind == "reset":
            self._record(whole=False)
            self.downstream.reset()
            return
        decision = self.decision
        route = decision.route
        service = decision.service
        self.status, response = injection.answer(
            verdict,
            sandbox=route.sandbox if route is not None else "",
            service=service.name if service is not None else "",
            route=decision.label,
            accept=self.head.values(b"accept"),
            protocol=self.head.values(b"mcp-protocol-version"),
            close=not self.keep_alive,
            head_only=self.method == b"HEAD",
        )
        self.bytes_out = len(response)
        if self.mcp:
            self.seen = mcp.scan_response(response, self.seen)
        self.downstream.write(response)
        self.downstream.uncork()
        self._record()
        self.downstream.exchange_done(self, reuse=self.keep_alive)

    def _rewrite(self, held: Held) -> None:
        """The whole response is here: write it rewritten (or, when it is not one the fault
        rewrites, as it came), with a Content-Length."""
        self.held = None
        verdict = self.verdict
        fault = verdict.rewrite if verdict is not None else None
        body = b"".join(held.chunks)
        if fault is not None and verdict is not None:
            service = self.decision.service
            new = rewrite.rewritten(
                fault,
                body,
                ctype=held.head.value(b"content-type") or b"",
                mcp=service is not None and service.is_mcp,
                rpc_id=verdict.rpc_id,
            )
            if new is None or held.head.value(b"content-encoding") not in (None, b"identity"):
                verdict.rewrite = None
            else:
                body = new
                self._injected()
        if self.mcp:
            self.seen = mcp.scan_response(body, self.seen)
        self.client_chunked = False
        self._write_head(held.status, held.reason, held.head, h.content_length(len(body)))
        self.bytes_out += len(body)
        self.downstream.write(body)

    def _pace(self) -> None:
        """`slow_stream`: write the next piece; the next one (or the end) `delay` later."""
        paced = self.paced
        if paced is None or self.downstream.is_closed():
            return
        data = paced.next()
        if data is not None:
            if self.mcp:
                self.seen = mcp.scan_response(data, self.seen)
            self.bytes_out += len(data)
            self.downstream.write(h.chunk(data) if self.client_chunked else data)
            self.downstream.uncork()
            if paced.size <= rewrite.LIMIT:
                self._read_upstream(True)
        if paced.pieces:
            self._later(paced.delay, self._pace)
            return
        paced.waiting = False  # the next piece from the upstream schedules the next turn
        if paced.ended:
            self.paced = None
            self._end()

    def _read_upstream(self, reading: bool) -> None:
        conn = self.conn
        if conn is not None:
            if reading:
                conn.resume_reading()
            else:
                conn.pause_reading()

    def _unrewritten(self, held: Held) -> None:
        """Over `rewrite.LIMIT`: what is held leaves as it came, and the rest streams."""
        self.held = None
        verdict = self.verdict
        if verdict is not None and verdict.rewrite is not None:
            verdict.rewrite.unrewritten += 1
            verdict.rewrite = None
        self._write_head(held.status, held.reason, held.head, held.framing)
        for data in held.chunks:
            self.response_body(data)

    # failures ---------------------------------------------------------------------------
    def _await_head(self) -> None:
        """Checked by the router's once-a-second sweep (`DownstreamConnection.tick`): far
        cheaper than a timer per request, at the price of up to a second's lateness on a 504."""
        context = self.context
        self.deadline = context.loop.time() + context.limits.upstream_timeout

    def timed_out(self) -> None:
        self.deadline = 0.0
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
        if self.phase < ANSWERING:
            self.fail(504, "upstream_timeout", f"{self.decision.upstream!r} did not answer in time")

    def fail(self, status: int, code: str, message: str) -> None:
        """Answer the client ourselves (a JSON error naming sandbox and service), then close."""
        if self.downstream.is_closed() or self.phase >= ANSWERING:
            return
        self.phase = DONE
        self.status = status
        service = self.decision.service
        body = json.dumps(
            {
                "error": code,
                "message": message,
                "sandbox": self.decision.sandbox,
                "service": service.name if service else None,
            }
        ).encode()
        self.downstream.write_error(status, body, route=self.decision.label)
        self._record()

    def answered(self, status: int, response: bytes) -> None:
        """The router answered the request itself, whole (a preview link's 303): the answer
        leaves, is recorded as any other, and the connection goes on."""
        self.phase = DONE
        self.status = status
        self.downstream.write(response)
        self.downstream.uncork()
        self._record()
        self.downstream.exchange_done(self, reuse=self.keep_alive)

    def client_gone(self) -> None:
        """The client closed its connection before this exchange ended. Recorded as far as it
        went: a response the client stopped reading (an MCP client may close an event stream
        once it has its answer) is no error of the service's; no response at all is a
        transport error."""
        if self.phase == DONE or not self.method:
            return  # (recorded already, or not a request yet: its head was not whole)
        self.phase = DONE
        self._record(whole=self.status != 0)

    # the request's record -----------------------------------------------------------------
    def _injected(self) -> None:
        self.injected_at = time.perf_counter() - self.started

    def _record(self, *, whole: bool = True) -> None:
        """`whole`: the client got a whole response (else a reset, or a response cut short)."""
        recorder = self.context.recorder
        if recorder is None:
            return  # recording is off
        decision = self.decision
        service = decision.service
        route = decision.route
        status = self.status
        error = record.HTTP_5XX if status >= 500 else mcp.rpc_error(self.seen)
        if error == record.OK and not whole:
            error = record.TRANSPORT
        verdict = self.verdict
        faults = verdict.applied() if verdict is not None else None
        try:
            ids = decision.recorded
            if ids is None or ids.epoch != recorder.epoch:
                ids = decision.recorded = recorder.ids(
                    service.name if service is not None else "-",
                    route.sandbox if route is not None else "",
                    route.key if route is not None else "",
                )
            recorder.write(
                self.started,
                ids,
                decision.sandbox is not None,
                self.method,
                status,
                self.body_size,
                self.bytes_out,
                self.traceparent,
                error,
                faults or None,
                self.injected_at,
                self.rpc_method,
                self.tool,
                self.rpc_id,
                self.target,
                self.session,
                mcp.rpc_code(self.seen) if error == record.JSONRPC else None,
                self.protocol,
            )
        except Exception:  # a bug of ours: the exchange still ends, and the log says so
            log.exception("cannot record a request")


class Held:
    """A response head and body kept until the body is whole, to rewrite it (`rewrite`)."""

    __slots__ = ("chunks", "framing", "head", "reason", "size", "status")

    def __init__(self, status: int, reason: bytes, head: h.ResponseHeaders, framing: bytes) -> None:
        self.status = status
        self.reason = reason
        self.head = head
        self.framing = framing  # the head's framing, were the body to pass as it came
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
