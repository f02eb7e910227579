"""An upstream may answer before the request is whole (a 413 on a large upload, say): the client
gets that answer whole, and then the connection closes — the rest of the request is moot, and
the router never reads it as a next request."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.router.conftest import Router, start_router
from tests.support.server import free_port

ANSWER = b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\n\r\nnope"


class EarlyOrigin:
    """A real origin on loopback that answers every request as soon as it has its head."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        """Answer every head as it is whole; a body is never read as such (its bytes only
        pile up, as a body that will not be answered anyway)."""
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
                while b"\r\n\r\n" in data:
                    data = data.partition(b"\r\n\r\n")[2]
                    conn.sendall(ANSWER)


@pytest.fixture(scope="module")
def early(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    origin = EarlyOrigin()
    table = {
        "baggageKey": "sandbox",
        "services": [{"name": "up", "routerPort": free_port(),
                      "baseline": f"http://127.0.0.1:{origin.port}"}],
        "routes": {},
        "version": "early",
    }  # fmt: skip
    r = start_router(Path(tmp_path_factory.mktemp("early")), table)
    yield r
    r.proc.terminate()
    r.proc.wait()
    origin.listener.close()


def test_an_answer_before_the_request_is_whole_closes_the_connection_after_it(
    early: Router,
) -> None:
    with socket.create_connection(("127.0.0.1", early.port), timeout=10) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        sock.sendall(b"x" * 1000)
        received = b""
        while chunk := sock.recv(65536):  # until the router closes (a timeout fails the test)
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ") and b"sandboxd-route: baseline" in head
    assert body == b"nope"  # the answer whole, and nothing after it


def test_a_whole_request_keeps_the_connection(early: Router) -> None:
    with socket.create_connection(("127.0.0.1", early.port), timeout=10) as sock:
        for _ in range(2):  # the same connection carries the second request
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while not received.endswith(b"nope"):
                chunk = sock.recv(65536)
                assert chunk, "the router closed a keep-alive connection"
                received += chunk
            assert received.startswith(b"HTTP/1.1 413 ")
