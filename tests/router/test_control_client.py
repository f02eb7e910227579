"""The router's client of the control plane (`sandboxd_router.control.ControlClient`) against
real HTTP servers on loopback: the request as the server sees it, answers with a length,
chunked or ended by the connection, the kept-alive connection and one the server closed while
idle, a server that is down, hangs or does not speak HTTP, and TLS verified against the
certificate store `SSL_CERT_FILE` names."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sandboxd_router import tls
from sandboxd_router.control import ControlClient, ControlError, Reply
from tests.support.certs import serve_tls
from tests.support.loopback import serving


@dataclass
class Server:
    port: int = 0
    seen: list[tuple[str, str, dict[str, str], bytes, int]] = field(default_factory=list)
    drop_after: bool = False
    """Close the connection after answering without saying so (an idle keep-alive timeout)."""


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _seen(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            port = self.client_address[1]
            server.seen.append((self.command, self.path, dict(self.headers), body, port))

        def do_GET(self) -> None:
            self._seen()
            if "/chunked" in self.path:
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("ETag", '"v7"')
                self.end_headers()
                for part in (b'{"a":', b" 1}"):
                    self.wfile.write(b"%x;ext=1\r\n%b\r\n" % (len(part), part))
                self.wfile.write(b"0\r\nX-Trailer: t\r\n\r\n")
            elif "/unmodified" in self.path:
                self.send_response(304)
                self.end_headers()
            else:  # no length: the body ends with the connection
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b"until the end")
            if server.drop_after:
                self.close_connection = True

        def do_POST(self) -> None:
            self._seen()
            answer = b'{"error": "instance_retired"}'
            self.send_response(409)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            if server.drop_after:
                self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[Server, ThreadingHTTPServer]]:
    state = Server()
    with serving(_handler(state)) as httpd:
        state.port = httpd.server_address[1]
        yield state, httpd


def _client(url: str, timeout: float = 5) -> ControlClient:
    return ControlClient(url, headers={"Authorization": "Bearer t0k"}, timeout=timeout)


def test_requests_go_under_the_urls_prefix_with_their_headers_and_body(
    server: tuple[Server, ThreadingHTTPServer],
) -> None:
    state, _ = server

    async def calls() -> tuple[Reply, Reply]:
        async with _client(f"http://127.0.0.1:{state.port}/cp/") as client:
            got = await client.get(
                "/v1/chunked", params={"wait": 30}, headers={"If-None-Match": "x"}
            )
            posted = await client.post_json("/v1/router-reports", {"seq": 1})
            return got, posted

    got, posted = asyncio.run(calls())

    (m1, p1, h1, _, port1), (m2, p2, h2, b2, port2) = state.seen
    assert (m1, p1, h1["If-None-Match"], h1["Authorization"]) == (
        "GET",
        "/cp/v1/chunked?wait=30",
        "x",
        "Bearer t0k",
    )
    assert h1["Host"] == f"127.0.0.1:{state.port}"
    assert (m2, p2, h2["Content-Type"], b2) == (
        "POST",
        "/cp/v1/router-reports",
        "application/json",
        b'{"seq":1}',
    )
    assert port1 == port2  # one kept-alive connection
    assert (got.status, got.body, got.headers["etag"]) == (200, b'{"a": 1}', '"v7"')
    assert (posted.status, posted.ok, posted.json()) == (409, False, {"error": "instance_retired"})


def test_an_answer_without_a_body_or_ended_by_the_connection(
    server: tuple[Server, ThreadingHTTPServer],
) -> None:
    state, _ = server

    async def calls() -> list[Reply]:
        async with _client(f"http://127.0.0.1:{state.port}") as client:
            return [
                await client.get(p, params={}, headers={})
                for p in ("/unmodified", "/end", "/unmodified")
            ]

    unmodified, ended, again = asyncio.run(calls())

    assert (unmodified.status, unmodified.body, again.status) == (304, b"", 304)
    assert ended.body == b"until the end"
    assert state.seen[1][4] == state.seen[0][4] != state.seen[2][4]  # closed after the end


def test_a_connection_the_server_closed_while_idle_is_replaced(
    server: tuple[Server, ThreadingHTTPServer],
) -> None:
    state, _ = server
    state.drop_after = True

    async def calls() -> list[int]:
        async with _client(f"http://127.0.0.1:{state.port}") as client:
            out = []
            for _ in range(3):
                out.append((await client.post_json("/r", {})).status)
                await asyncio.sleep(0.05)  # (the server's close arrives)
            return out

    assert asyncio.run(calls()) == [409, 409, 409]
    assert len(state.seen) == 3 and len({s[4] for s in state.seen}) == 3


def test_a_server_that_is_down_hangs_or_is_not_http_is_an_error() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    async def call(timeout: float = 5) -> Reply:
        async with _client(f"http://127.0.0.1:{port}", timeout) as client:
            return await client.post_json("/r", {})

    with pytest.raises(ControlError, match="ConnectionRefused"):
        asyncio.run(call())
    listener.listen()  # accepts, never answers
    started = time.monotonic()
    with pytest.raises(ControlError, match="TimeoutError"):
        asyncio.run(call(timeout=0.3))
    assert time.monotonic() - started < 3
    listener.close()

    def garbage(sock: socket.socket) -> None:
        conn, _ = sock.accept()
        conn.recv(65536)
        conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")
        conn.close()

    other = socket.create_server(("127.0.0.1", 0))
    port = other.getsockname()[1]
    threading.Thread(target=garbage, args=(other,), daemon=True).start()
    with pytest.raises(ControlError, match="not an HTTP answer"):
        asyncio.run(call())
    other.close()


def test_not_an_http_url_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http"):
        _client("ftp://example.test/")


def test_tls_is_verified_against_the_store_ssl_cert_file_names(
    server: tuple[Server, ThreadingHTTPServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, httpd = server
    cert = serve_tls(httpd, tmp_path)

    async def call() -> Reply:
        async with _client(f"https://127.0.0.1:{state.port}") as client:
            return await client.post_json("/r", {})

    tls._verified.cache_clear()  # (the store is loaded once a process: here, once a case)
    with pytest.raises(ControlError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(call())  # a self-signed certificate the system store does not hold
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    tls._verified.cache_clear()
    assert asyncio.run(call()).status == 409
    tls._verified.cache_clear()
    assert len(state.seen) == 1


def test_the_long_poll_stops_when_cancelled_while_every_connection_is_refused() -> None:
    """The router's shutdown cancels its long poll: the cancellation must never be lost, also
    when it lands as a connection is refused (a `wait_for` around the connect lost it in
    Python 3.11, and the router then ignored SIGTERM)."""
    from sandboxd_router.table import UpstreamRegistry
    from sandboxd_router.watch import watch_control_plane

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = s.getsockname()[1]  # (bound, never listening: every connect is refused)

        async def applied(_table: object) -> None:
            raise AssertionError("no table can come")

        async def cancelled_at(delay: float) -> bool:
            task = asyncio.create_task(watch_control_plane(
                url=f"http://127.0.0.1:{refused}", token="t", upstreams=UpstreamRegistry(),
                on_table=applied))  # fmt: skip
            await asyncio.sleep(delay)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=2)
            if not done:  # (stop it for good: the test has its answer)
                for _ in range(50):
                    task.cancel()
                    await asyncio.sleep(0)
            return bool(done)

        async def attempts() -> list[bool]:
            return [await cancelled_at(n % 37 * 0.0001) for n in range(300)]

        stopped = asyncio.run(attempts())
    assert all(stopped), f"{stopped.count(False)} of 300 cancellations lost"
