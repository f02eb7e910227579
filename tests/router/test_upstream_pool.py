"""The upstream pool's invariant: a connection given back to the pool reads again.

Backpressure pauses an upstream connection's reading while the client is slow to take the
response (`Downstream.pause_writing`). When that pause landed in the very read that ended the
response, or came as the exchange flushed its last bytes after the connection had gone back to
the pool, the connection sat in the pool paused, and the next request sent on it was never
answered (504 at the upstream timeout): seen about once in 15 runs of test_proxying.py after
its 20 MB download. Driven here through the pool itself, against a real origin process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from sandboxd_router.headers import ResponseHeaders
from sandboxd_router.upstream import Upstream, UpstreamConnection
from tests.router.conftest import Origin, start_origin


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    started = start_origin("pool")
    yield started
    started.proc.terminate()
    started.proc.wait()


class Receiver:
    """An exchange's side of one response; `pause_on` does what a slow client's backpressure
    does (`Downstream.pause_writing`): pause the upstream's reading as the body arrives
    ("body"), or as the exchange flushes its last bytes after the response ended ("end")."""

    def __init__(self, conn: UpstreamConnection, *, pause_on: str | None) -> None:
        self.conn = conn
        self.pause_on = pause_on
        self.status = 0
        self.body = bytearray()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def response_head(
        self, status: int, reason: bytes, head: ResponseHeaders, *, body: str
    ) -> None:
        self.status = status

    def response_interim(self, status: int, reason: bytes) -> None:
        pass

    def response_body(self, data: bytes) -> None:
        self.body += data
        if self.pause_on == "body":
            self.conn.pause_reading()

    def response_end(self) -> None:
        if self.pause_on == "end":
            self.conn.pause_reading()
        self.done.set_result(None)

    def upstream_failed(self, error: str) -> None:
        self.done.set_exception(RuntimeError(error))

    def upstream_pause(self, paused: bool) -> None:
        pass

    def cork(self) -> bool:
        return False

    def uncork(self) -> None:
        pass


async def exchange(conn: UpstreamConnection, target: str, *, pause_on: str | None) -> Receiver:
    receiver = Receiver(conn, pause_on=pause_on)
    conn.start(receiver, head_only=False)
    assert conn.transport is not None
    conn.transport.write(f"GET {target} HTTP/1.1\r\nHost: origin\r\n\r\n".encode())
    await asyncio.wait_for(receiver.done, 5)
    return receiver


@pytest.mark.parametrize("pause_on", ["body", "end"])
async def test_a_connection_paused_as_its_response_ended_reads_again_in_the_pool(
    origin: Origin, pause_on: str
) -> None:
    upstream = Upstream("127.0.0.1", origin.port)
    conn = await upstream.connect(5)
    try:
        await exchanges(upstream, conn, pause_on)
    finally:
        conn.close()


async def exchanges(upstream: Upstream, conn: UpstreamConnection, pause_on: str) -> None:
    first = await exchange(conn, "/big?bytes=1000", pause_on=pause_on)
    assert (first.status, len(first.body)) == (200, 1000)
    assert upstream.take_idle() is conn  # kept alive, back in the pool
    second = await exchange(conn, "/echo", pause_on=None)  # hung here before the fix
    assert second.status == 200 and b'"target": "/echo"' in second.body
