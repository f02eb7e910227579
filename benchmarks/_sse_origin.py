"""SSE origin for the router benchmark: `python _sse_origin.py PORT`.

Answers any request with a chunked `text/event-stream` of `n` events `interval_ms` apart
(query parameters, defaults 200 and 20), one chunk per event, each carrying its send time:
`data: <seq> <time.monotonic_ns()>` — CLOCK_MONOTONIC is one clock for every process on the
machine, so a client can subtract. Keep-alive: after a stream the connection takes the next
request, as a proxy's pooled upstream connection will send one.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from urllib.parse import parse_qs, urlsplit

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
MAX_EVENTS = 10_000


class Stream(asyncio.Protocol):
    def __init__(self) -> None:
        self._buf = b""
        self._task: asyncio.Task[None] | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None:
            self._task.cancel()

    def _next(self) -> None:
        if self._task is not None or b"\r\n\r\n" not in self._buf:
            return
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        query = parse_qs(urlsplit(head.split(b" ", 2)[1].decode()).query)
        n = min(int(query.get("n", ["200"])[0]), MAX_EVENTS)
        interval = float(query.get("interval_ms", ["20"])[0]) / 1000
        self._task = asyncio.get_running_loop().create_task(self._emit(n, interval))

    async def _emit(self, n: int, interval: float) -> None:
        transport = self._transport
        assert transport is not None
        transport.write(HEAD)
        loop = asyncio.get_running_loop()
        start = loop.time() + interval
        for seq in range(n):
            await asyncio.sleep(max(0.0, start + seq * interval - loop.time()))
            event = b"id: %d\ndata: %d %d\n\n" % (seq, seq, time.monotonic_ns())
            transport.write(b"%x\r\n%s\r\n" % (len(event), event))
        transport.write(b"0\r\n\r\n")
        self._task = None
        self._next()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Stream, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    port = int(sys.argv[1])
    try:
        import uvloop
    except ImportError:  # plain asyncio is fine for one stream at a time
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(port))
        return
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(port))


if __name__ == "__main__":
    main()
