"""Clients the router benchmark runs in-process (on core 1): an open-loop latency generator,
an SSE event timer, a holder of many idle keep-alive connections, and a blocking probe.

The latency generator follows wrk2: request i is *scheduled* at start + i/rate and its latency
is counted from that time, so a slow response also delays (and is charged to) the requests
queued behind it — no coordinated omission. With one connection (c=1) the event loop has
nothing else to do between requests, so it waits for the next send time with a blocking
`time.sleep` (about 60 µs late, less with the timer slack lowered) rather than a loop timer
(libuv's are millisecond-grained, which would swamp a 100 µs difference).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import re
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def request(port: int, *, baggage: str | None, path: str = "/") -> bytes:
    extra = f"baggage: {baggage}\r\n" if baggage else ""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()


def lower_timer_slack() -> None:
    """prctl(PR_SET_TIMERSLACK, 1 ns) for this thread, so sleeps end on time (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)


class _Responses(asyncio.Protocol):
    """One response at a time on a keep-alive connection (Content-Length or chunked bodies)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost = False

    def data_received(self, data: bytes) -> None:
        at = time.perf_counter_ns()
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None or self.waiter.done():
            return
        head = bytes(self.buf[: end + 2])
        length = _LENGTH.search(head)
        if length is not None:
            total = end + 4 + int(length.group(1))
        elif _CHUNKED.search(head):
            last = self.buf.find(b"\r\n0\r\n\r\n", end)
            total = last + 7 if last >= 0 else -1
        else:
            total = end + 4
        if total < 0 or len(self.buf) < total:
            return
        del self.buf[:total]
        self.waiter.set_result((at, head))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection closed: {exc}"))

    async def exchange(self, transport: asyncio.Transport, req: bytes) -> tuple[int, bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        transport.write(req)
        return await asyncio.wait_for(self.waiter, 5)


def _status(head: bytes) -> int:
    return int(head[9:12])


class Connection:
    """A keep-alive connection carrying one request at a time (c=1, closed loop)."""

    def __init__(self, transport: asyncio.Transport, proto: _Responses) -> None:
        self.transport = transport
        self.proto = proto

    @classmethod
    async def open(cls, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_connection(_Responses, "127.0.0.1", port)
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(transport, proto)

    async def exchange(self, req: bytes) -> tuple[int, bytes]:
        """(perf_counter_ns when the whole response was in, its head)."""
        return await self.proto.exchange(self.transport, req)

    def close(self) -> None:
        self.transport.close()


@dataclass
class LatencyRun:
    latencies_ns: list[int] = field(default_factory=list)  # from each scheduled send time
    send_lag_ns: list[int] = field(default_factory=list)  # our own lateness, for the record
    errors: int = 0


async def open_loop(port: int, *, baggage: str, rate: float, duration: float) -> LatencyRun:
    """c=1 at a fixed `rate`, after a short closed-loop warm-up on the same connection."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(_Responses, "127.0.0.1", port)
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req = request(port, baggage=baggage)
    out = LatencyRun()
    try:
        for _ in range(200):
            await proto.exchange(transport, req)
        interval = 1e9 / rate
        start = time.perf_counter_ns() + 1_000_000
        for i in range(int(rate * duration)):
            scheduled = start + int(i * interval)
            ahead = scheduled - time.perf_counter_ns()
            if ahead > 0:
                time.sleep(ahead / 1e9)  # blocking on purpose: see the module docstring
            out.send_lag_ns.append(time.perf_counter_ns() - scheduled)
            at, head = await proto.exchange(transport, req)
            out.latencies_ns.append(at - scheduled)
            if _status(head) != 200:
                out.errors += 1
    finally:
        transport.close()
    return out


def ping_pong(port: int, *, rate: float, duration: float) -> list[int]:
    """Round trips of one byte to an echo at a fixed `rate` (blocking, timed as `open_loop`
    times requests): against an echo on the other core, a wake-up there and one back here."""
    rtts: list[int] = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        interval = 1e9 / rate
        start = time.perf_counter_ns() + 1_000_000
        for i in range(int(rate * duration)):
            ahead = start + int(i * interval) - time.perf_counter_ns()
            if ahead > 0:
                time.sleep(ahead / 1e9)
            sent = time.perf_counter_ns()
            sock.sendall(b"x")
            if not sock.recv(16):
                raise ConnectionError("the echo closed the connection")
            rtts.append(time.perf_counter_ns() - sent)
    return rtts


@dataclass
class SseRun:
    delays_ns: list[int] = field(default_factory=list)  # arrival - the origin's send time
    events_per_read: list[int] = field(default_factory=list)  # reads that completed events
    status: int = 0
    route: str = ""


class _SseClient(asyncio.Protocol):
    """Decodes a chunked event stream incrementally and timestamps each completed event."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.run = SseRun()
        self.raw = bytearray()
        self.body = bytearray()
        self.head_done = False
        self.chunked = False
        self.data_left = 0
        self.crlf_left = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self.raw += data
        if not self.head_done and not self._head():
            return
        self._dechunk() if self.chunked else self._plain()
        completed = 0
        while (end := self.body.find(b"\n\n")) >= 0:
            event = bytes(self.body[:end])
            del self.body[: end + 2]
            for line in event.split(b"\n"):
                if line.startswith(b"data: "):
                    sent = int(line.split()[2])
                    self.run.delays_ns.append(now - sent)
                    completed += 1
        if completed:
            self.run.events_per_read.append(completed)
        if len(self.run.delays_ns) >= self.n and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"stream closed early: {exc}"))

    def _head(self) -> bool:
        end = self.raw.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.raw[: end + 2])
        del self.raw[: end + 4]
        self.head_done = True
        self.run.status = _status(head)
        self.chunked = bool(_CHUNKED.search(head))
        route = re.search(rb"\r\nsandboxd-route:\s*([^\r]*)", head, re.IGNORECASE)
        self.run.route = route.group(1).decode() if route else ""
        return True

    def _plain(self) -> None:
        self.body += self.raw
        self.raw.clear()

    def _dechunk(self) -> None:
        while self.raw:
            if self.data_left:
                piece = self.raw[: self.data_left]
                self.body += piece
                self.data_left -= len(piece)
                del self.raw[: len(piece)]
            elif self.crlf_left:
                dropped = min(self.crlf_left, len(self.raw))
                self.crlf_left -= dropped
                del self.raw[:dropped]
            else:
                line_end = self.raw.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(bytes(self.raw[:line_end]).split(b";")[0], 16)
                del self.raw[: line_end + 2]
                if size == 0:
                    return
                self.data_left, self.crlf_left = size, 2


async def sse(port: int, *, baggage: str, n: int, interval_ms: float) -> SseRun:
    loop = asyncio.get_running_loop()
    path = f"/events?n={n}&interval_ms={interval_ms}"
    transport, proto = await loop.create_connection(lambda: _SseClient(n), "127.0.0.1", port)
    try:
        transport.write(request(port, baggage=baggage, path=path))
        await asyncio.wait_for(proto.done, n * interval_ms / 1000 + 10)
    finally:
        transport.close()
    return proto.run


async def holding(
    port: int,
    *,
    count: int,
    baggage: str,
    measure: Callable[[], Awaitable[T]],
    host: str = "127.0.0.1",
) -> tuple[T, int]:
    """Open `count` keep-alive connections to `host`, one request each, then `measure()` while
    all of them are still open. Returns what `measure` returned and how many requests failed."""
    loop = asyncio.get_running_loop()
    req = request(port, baggage=baggage)
    gate = asyncio.Semaphore(64)
    transports: list[asyncio.BaseTransport] = []

    async def one() -> bool:
        async with gate:
            transport, proto = await loop.create_connection(_Responses, host, port)
            transports.append(transport)
            _, head = await proto.exchange(transport, req)
            return _status(head) == 200

    try:
        results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
        failed = sum(1 for r in results if r is not True)
        await asyncio.sleep(0.5)
        return await measure(), failed
    finally:
        for transport in transports:
            transport.close()


class Closed(ConnectionError):
    """No (complete) response on a keep-alive connection: closed, or 5 s without one."""


class Probe:
    """A blocking keep-alive HTTP/1.1 client for checks and back-to-back polling."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def get(self, *, baggage: str | None) -> tuple[int, dict[str, str]]:
        """One request; a connection closed before a response raises `Closed` and is replaced,
        so the caller decides whether that is a finding."""
        try:
            self.sock.sendall(request(self.port, baggage=baggage))
            return self._response()
        except TimeoutError as e:
            self.reconnect()
            raise Closed("no response in 5 s (connection replaced)") from e
        except ConnectionError as e:
            self.reconnect()
            raise Closed("connection closed without a response") from e

    def reconnect(self) -> None:
        self.sock.close()
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _response(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buf:
            self._read()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            need = int(headers["content-length"])
            while len(self.buf) < need:
                self._read()
            self.buf = self.buf[need:]
        elif "chunked" in headers.get("transfer-encoding", ""):
            while b"\r\n0\r\n\r\n" not in b"\r\n" + self.buf:
                self._read()
            self.buf = (b"\r\n" + self.buf).split(b"\r\n0\r\n\r\n", 1)[1]
        if headers.get("connection", "").lower() == "close":
            self.reconnect()
        return int(lines[0].split()[1]), headers

    def _read(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise Closed(f"port {self.port} closed the connection")
        self.buf += data

    def close(self) -> None:
        self.sock.close()
