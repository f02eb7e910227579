"""The telemetry process's HTTP client (`telemetry.post.Poster`) against real HTTP servers on
loopback: what reaches the server, the kept-alive connection, a connection the server closed
while idle, a server that is down or hangs (the event loop keeps running), and TLS verified
against the certificate store `SSL_CERT_FILE` names."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sandboxd_router.telemetry.post import Answer, Poster, PostError
from tests.support.certs import serve_tls
from tests.support.loopback import serving


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int


@dataclass
class Server:
    port: int
    seen: list[Seen] = field(default_factory=list)
    close_after: bool = False
    """Answer with `Connection: close` (the client must not reuse the connection)."""
    drop_after: bool = False
    """Close the connection after answering without saying so (an idle keep-alive timeout)."""


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            server.seen.append(
                Seen(self.path, dict(self.headers.items()), body, self.client_address[1])
            )
            answer = b'{"ok": true}'
            self.send_response(202 if self.path.endswith("/accepted") else 200)
            self.send_header("Content-Length", str(len(answer)))
            if server.close_after:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(answer)
            if server.drop_after:
                self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[Server, ThreadingHTTPServer]]:
    with serving(_handler(Server(0))) as httpd:
        state = Server(httpd.server_address[1])
        httpd.RequestHandlerClass = _handler(state)
        yield state, httpd


def test_a_post_reaches_the_path_under_the_urls_prefix_with_its_headers(
    server: tuple[Server, ThreadingHTTPServer],
) -> None:
    state, _ = server

    async def go() -> list[Answer]:
        poster = Poster(
            f"http://127.0.0.1:{state.port}/cp/", {"Authorization": "Bearer t"}, timeout=5
        )
        try:
            return [
                await poster.post("/v1/router-signals", b'{"a": 1}', "application/json"),
                await poster.post("/v1/accepted", b"{}", "application/json"),
            ]
        finally:
            poster.close()

    first, second = asyncio.run(go())
    assert (first.status, first.body) == (200, b'{"ok": true}') and first.ok
    assert second.status == 202 and second.ok
    assert [s.path for s in state.seen] == ["/cp/v1/router-signals", "/cp/v1/accepted"]
    assert state.seen[0].body == b'{"a": 1}'
    assert state.seen[0].headers["Authorization"] == "Bearer t"
    assert state.seen[0].headers["Content-Type"] == "application/json"
    # one connection, kept alive
    assert state.seen[0].client_port == state.seen[1].client_port


def test_a_connection_the_server_closes_is_not_reused(
    server: tuple[Server, ThreadingHTTPServer],
) -> None:
    state, _ = server
    state.close_after = True

    async def go() -> None:
        poster = Poster(f"http://127.0.0.1:{state.port}", {}, timeout=5)
        try:
            for _ in range(3):
                assert (await poster.post("/x", b"{}", "application/json")).ok
        finally:
            poster.close()

    asyncio.run(go())
    assert len({s.client_port for s in state.seen}) == 3


def test_an_idle_connection_closed_by_the_server_is_retried_once_on_a_new_one(
    server: tuple[Server, ThreadingHTTPServer],
) -> None:
    state, _ = server
    state.drop_after = True

    async def go() -> None:
        poster = Poster(f"http://127.0.0.1:{state.port}", {}, timeout=5)
        try:
            for body in (b"1", b"2", b"3"):
                assert (await poster.post("/x", body, "application/json")).ok
                await asyncio.sleep(0.05)  # the server has closed its end meanwhile
        finally:
            poster.close()

    asyncio.run(go())
    assert [s.body for s in state.seen] == [b"1", b"2", b"3"]  # each once
    assert len({s.client_port for s in state.seen}) == 3


def test_nothing_listening_is_a_post_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused

    async def go() -> None:
        poster = Poster(f"http://127.0.0.1:{port}", {}, timeout=5)
        try:
            with pytest.raises(PostError, match="ConnectionRefused"):
                await poster.post("/x", b"{}", "application/json")
        finally:
            poster.close()

    asyncio.run(go())


def test_a_server_that_never_answers_times_out_while_the_loop_goes_on() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    port = listener.getsockname()[1]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def go() -> None:
        poster = Poster(f"http://127.0.0.1:{port}", {}, timeout=0.5)
        task = asyncio.create_task(ticker())
        try:
            with pytest.raises(PostError, match=r"timed out|TimeoutError"):
                await poster.post("/x", b"{}", "application/json")
        finally:
            task.cancel()
            poster.close()

    try:
        asyncio.run(go())
    finally:
        listener.close()
    assert ticks >= 10  # the loop ran the ticker all along the half second


def test_not_an_http_url_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Poster("ftp://example.test/", {}, timeout=1)


def test_tls_is_verified_against_the_store_ssl_cert_file_names(
    server: tuple[Server, ThreadingHTTPServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, httpd = server
    cert = serve_tls(httpd, tmp_path)

    async def post() -> Answer:
        poster = Poster(f"https://127.0.0.1:{state.port}", {}, timeout=5)
        try:
            return await poster.post("/x", b"{}", "application/json")
        finally:
            poster.close()

    with pytest.raises(PostError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(post())  # a self-signed certificate the system store does not hold
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    assert asyncio.run(post()).ok
    assert len(state.seen) == 1


def test_a_post_that_timed_out_is_not_sent_again() -> None:
    """The server may be processing it: only a connection closed while idle is retried."""
    got: list[bytes] = []

    class Slow(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            if len(got) > 1:
                time.sleep(1.0)  # past the client's timeout
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    async def go(port: int) -> None:
        poster = Poster(f"http://127.0.0.1:{port}", {}, timeout=0.3)
        try:
            assert (await poster.post("/x", b"1", "application/json")).ok
            with pytest.raises(PostError, match=r"timed out|TimeoutError"):
                await poster.post("/x", b"2", "application/json")  # on the kept-alive one
        finally:
            poster.close()

    with serving(Slow) as httpd:
        asyncio.run(go(httpd.server_address[1]))
        time.sleep(1.2)  # (a second copy would have arrived by now)
    assert got == [b"1", b"2"]
