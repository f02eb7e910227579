"""One request and its response, from the client's connection to an upstream and back.

Nothing is buffered that can be streamed: request body chunks go to the upstream as they arrive
(held only while the upstream connection is being opened, or while an MCP body is read to find
its routing key), and response bytes go to the client as the upstream sends them.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

from sandboxd_router import headers as h
from sandboxd_router.pool import Upstream, UpstreamConnection

if TYPE_CHECKING:
    from sandboxd_router.client import ClientConnection
    from sandboxd_router.table import Service

REPLAY_LIMIT = 64 * 1024  # a request this small is kept until answered, to retry a stale socket
PENDING_LIMIT = 256 * 1024  # body bytes kept before an upstream connection takes them


class Exchange:
    __slots__ = (
        "baggage",
        "body",
        "body_size",
        "bytes_out",
        "chunked",
        "client",
        "client_chunked",
        "close_after",
        "complete",
        "conn",
        "content_length",
        "deadline",
        "decision",
        "head",
        "headers",
        "hold",
        "host",
        "keep_alive",
        "method",
        "replay",
        "replay_size",
        "responded",
        "sandbox",
        "service",
        "session",
        "started",
        "status",
        "target",
        "task",
        "traceparent",
        "upstream",
    )  # fmt: skip

    def __init__(self, client: ClientConnection) -> None:
        self.client = client
        self.method = b""
        self.target = b""
        self.head = h.RequestHeaders()
        self.baggage: list[bytes] = []
        self.host: bytes | None = None
        self.session: bytes | None = None
        self.traceparent: bytes | None = None
        self.content_length: bytes | None = None
        self.chunked = False
        self.keep_alive = True
        self.body: list[bytes] = []
        self.body_size = 0
        self.complete = False
        self.hold = False
        self.service: Service | None = None
        self.upstream: Upstream | None = None
        self.decision = b"baseline"
        self.sandbox: str | None = None
        self.conn: UpstreamConnection | None = None
        self.replay: list[bytes] | None = []
        self.replay_size = 0
        self.started = time.perf_counter()
        self.status = 0
        self.bytes_out = 0
        self.client_chunked = False
        self.close_after = False
        self.responded = False
        self.deadline = 0.0  # loop time by which the response head is due (0: not waiting)
        self.task: asyncio.Future[None] | None = None  # a connect in progress (kept from GC)

    # request side -----------------------------------------------------------------------
    def start(self) -> None:
        """Send the request upstream, on a pooled connection when one is idle."""
        assert self.upstream is not None
        conn = self.upstream.take_idle()
        if conn is not None:
            self._attach(conn)
        else:
            self.task = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        assert self.upstream is not None
        limits = self.client.state.limits
        try:
            conn = await self.upstream.connect(limits.connect_timeout)
        except (OSError, TimeoutError) as e:
            reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
            self.fail(502, "upstream_unreachable", f"cannot connect to {self.upstream!r}: {reason}")
            return
        if self.client.closed:
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
            client=self.client.peer,
            original_host=self.host,
            framing=framing,
        )
        corked = conn.cork()
        self._send(head)
        body, self.body = self.body, []
        for data in body:
            self._send(h.chunk(data) if self.chunked else data)
        if self.body_size > PENDING_LIMIT:
            self.client.pause_for_upstream(False)  # (paused by add_body, perhaps)
        if self.complete:
            self._request_sent()
        if corked and not self.client.feeding:
            conn.uncork()

    def add_body(self, data: bytes) -> None:
        self.body_size += len(data)
        if self.conn is not None:
            self._send(h.chunk(data) if self.chunked else data)
        else:
            self.body.append(data)
            if self.body_size > PENDING_LIMIT and not self.hold:
                # no upstream to take it yet (still connecting): read no more until one does,
                # or a fast client would fill our memory for as long as the connect takes
                self.client.pause_for_upstream(True)

    def request_complete(self) -> None:
        self.complete = True
        if self.conn is not None:
            self._request_sent()

    def _request_sent(self) -> None:
        if self.chunked:
            self._send(h.LAST_CHUNK)
        self._await_head()
        state = self.client.state
        if state.limits.busy_poll and not state.spinning:
            state.spinning = True
            loop = self.client.loop
            loop.call_soon(self._spin, loop, loop.time() + state.limits.busy_poll)

    def _spin(self, loop: asyncio.AbstractEventLoop, until: float) -> None:
        """Keep the loop polling (epoll with no timeout) until the answer comes or `until`: an
        upstream on loopback answers within tens of microseconds, and sleeping in between costs
        a wake-up of about as much on a virtual machine. One spinner at a time, bounded."""
        if not self.responded and self.conn is not None and loop.time() < until:
            loop.call_soon(self._spin, loop, until)
        else:
            self.client.state.spinning = False

    def _send(self, data: bytes) -> None:
        conn = self.conn
        assert conn is not None
        if self.client.feeding:
            conn.cork()  # the client's data_received uncorks it when its read is parsed
        conn.write(data)
        if self.replay is not None:
            self.replay.append(data)
            self.replay_size += len(data)
            if self.replay_size > REPLAY_LIMIT:
                self.replay = None

    # response side (the Receiver protocol) ----------------------------------------------
    def response_interim(self, status: int, reason: bytes) -> None:
        self.client.write(b"HTTP/1.1 %d %b\r\n\r\n" % (status, reason))

    def response_head(
        self, status: int, reason: bytes, head: h.ResponseHeaders, *, body: str
    ) -> None:
        self.deadline = 0.0
        self.replay = None
        self.responded = True
        self.status = status
        framing = b""
        if body in ("chunked", "close"):
            if self.client.http11:
                framing, self.client_chunked = h.CHUNKED, True
            else:
                self.close_after = True
        if not self.keep_alive:
            self.close_after = True
        if self.service is not None and self.service.is_mcp:
            self._track_session(status, head.session)
        self.client.write(
            head.render(
                status, reason, route=self.decision, framing=framing, close=self.close_after
            )
        )

    def response_body(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.client.write(h.chunk(data) if self.client_chunked else data)

    def response_end(self) -> None:
        if self.client_chunked:
            self.client.write(h.LAST_CHUNK)
        self.client.uncork()  # the response leaves now: our bookkeeping is off the client's clock
        self.conn = None
        self._log()
        self.client.exchange_done(self)

    def upstream_failed(self, error: str) -> None:
        conn, self.conn = self.conn, None
        self.deadline = 0.0
        if (
            not self.responded
            and conn is not None
            and conn.reused
            and self.replay is not None
            and self.complete
        ):
            self._retry()
            return
        if self.responded:
            self._log()
            self.client.abort()
        else:
            self.fail(502, "upstream_failed", error)

    def cork(self) -> bool:
        return self.client.cork()

    def uncork(self) -> None:
        self.client.uncork()

    def upstream_pause(self, paused: bool) -> None:
        self.client.pause_for_upstream(paused)

    def _retry(self) -> None:
        """A pooled connection the upstream had closed: send the same bytes on a new one."""
        sent, self.replay = self.replay or [], None

        async def again() -> None:
            assert self.upstream is not None
            try:
                conn = await self.upstream.connect(self.client.state.limits.connect_timeout)
            except (OSError, TimeoutError) as e:
                self.fail(502, "upstream_unreachable", f"cannot connect to {self.upstream!r}: {e}")
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
        sessions = self.client.state.sessions
        if self.session is not None:
            if status == 404 or (self.method == b"DELETE" and status < 300):
                sessions.forget(self.session)
            return
        if started is not None and self.upstream is not None:
            sessions.remember(started, self.upstream, self.decision)

    # failures ---------------------------------------------------------------------------
    def _await_head(self) -> None:
        """Checked by the router's once-a-second sweep (`ClientConnection.tick`): far cheaper
        than a timer per request, at the price of up to a second's lateness on a 504."""
        limits = self.client.state.limits
        self.deadline = self.client.loop.time() + limits.upstream_timeout

    def timed_out(self) -> None:
        self.deadline = 0.0
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
        if not self.responded:
            self.fail(504, "upstream_timeout", f"{self.upstream!r} did not answer in time")

    def fail(self, status: int, code: str, message: str) -> None:
        """Answer the client ourselves (a JSON error naming sandbox and service), then close."""
        if self.client.closed or self.responded:
            return
        self.responded = True
        self.status = status
        body = json.dumps(
            {
                "error": code,
                "message": message,
                "sandbox": self.sandbox,
                "service": self.service.name if self.service else None,
            }
        ).encode()
        self.client.write_error(status, body, route=self.decision)
        self._log()

    def _log(self) -> None:
        log = self.client.state.log
        if log.enabled:
            log.record(
                service=self.service.name if self.service else "-",
                route=self.decision,
                method=self.method,
                status=self.status,
                started=self.started,
                bytes_in=self.body_size,
                bytes_out=self.bytes_out,
                traceparent=self.traceparent,
            )
