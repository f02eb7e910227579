"""Interim (1xx) responses: forwarded to the client, then the final response, whole — whether
the upstream sends them in one write or apart, and on a kept-alive upstream connection after."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.router.conftest import Router, start_router
from tests.support.server import free_port

BODY = b"b" * 70_000  # larger than one read, so the final body spans several


class InterimOrigin:
    """A raw HTTP/1.1 origin: `GET /together` answers 100 and 200 in one write; `/apart`
    answers 103, waits, then 200 in two writes (head, then body after a pause); `/close`
    answers a 100 carrying `Connection: close`, then (apart) the 200."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                final = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY)
                if head.startswith(b"GET /close"):  # a 1xx that says `Connection: close`
                    conn.sendall(b"HTTP/1.1 100 Continue\r\nConnection: close\r\n\r\n")
                    time.sleep(0.05)
                    conn.sendall(final + BODY)
                elif head.startswith(b"GET /together"):
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" + final + BODY[:1000])
                    time.sleep(0.05)
                    conn.sendall(BODY[1000:])
                else:
                    conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
                    time.sleep(0.05)
                    conn.sendall(final)
                    time.sleep(0.05)
                    conn.sendall(BODY)

    def close(self) -> None:
        self.server.close()


@pytest.fixture(scope="module")
def interim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Router, InterimOrigin]]:
    origin = InterimOrigin()
    port = free_port()
    table = {
        "baggageKey": "sandbox",
        "services": [{"name": "echo", "protocol": "http", "routerPort": port,
                      "baseline": f"http://127.0.0.1:{origin.port}"}],
        "routes": {},
        "version": "interim",
    }  # fmt: skip
    router = start_router(Path(tmp_path_factory.mktemp("interim")), table)
    yield router, origin
    router.proc.terminate()
    router.proc.wait()
    origin.close()


def _read_response(sock: socket.socket) -> tuple[list[bytes], bytes]:
    """Every head up to the final one, and the final body (Content-Length)."""
    heads: list[bytes] = []
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            assert data, f"closed after {heads} and {buf[:200]!r}"
            buf += data
        head, _, buf = buf.partition(b"\r\n\r\n")
        heads.append(head)
        status = int(head.split(b" ", 2)[1])
        if status >= 200:
            break
    length = next(
        int(line.split(b":", 1)[1])
        for line in heads[-1].split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(buf) < length:
        data = sock.recv(65536)
        assert data, f"closed with {len(buf)} of {length} body bytes"
        buf += data
    assert len(buf) == length
    return heads, buf


def test_interim_then_final_responses_on_one_kept_alive_connection(
    interim: tuple[Router, InterimOrigin],
) -> None:
    router, origin = interim
    before = origin.connections
    with socket.create_connection(("127.0.0.1", router.port), timeout=5) as sock:
        # each kind twice, alternating: every response after the first reuses the upstream
        for path, expected in [("/together", 100), ("/apart", 103)] * 2:
            sock.sendall(b"GET %b HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
            heads, body = _read_response(sock)
            assert [int(h.split(b" ", 2)[1]) for h in heads] == [expected, 200], path
            assert b"sandboxd-route: baseline" in heads[-1]
            assert body == BODY
    assert origin.connections - before == 1  # one upstream connection, kept and reused


def test_a_1xx_saying_connection_close_does_not_break_the_final_response(
    interim: tuple[Router, InterimOrigin],
) -> None:
    router, _ = interim
    with socket.create_connection(("127.0.0.1", router.port), timeout=5) as sock:
        sock.sendall(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n")
        heads, body = _read_response(sock)
    assert [int(h.split(b" ", 2)[1]) for h in heads] == [100, 200]
    assert body == BODY
