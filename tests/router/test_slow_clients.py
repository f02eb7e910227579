"""Slow and greedy clients: heads and bodies have deadlines, connections a limit."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.router.conftest import Origin, Router, routes_table, start_router
from tests.support import poll
from tests.support.server import free_port


@pytest.fixture(scope="module")
def strict(
    origins: dict[str, Origin], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Router]:
    tmp = tmp_path_factory.mktemp("strict")
    r = start_router(tmp, routes_table(free_port(), origins), "--head-timeout", "1",
                     "--body-timeout", "1")  # fmt: skip
    yield r
    r.proc.terminate()
    r.proc.wait()


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def test_a_head_sent_a_byte_at_a_time_gets_408_and_is_closed(
    strict: Router, origins: dict[str, Origin]
) -> None:
    origins["baseline"].forget()
    head = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 200 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as sock:
        sent = 0
        try:
            for byte in head:  # one byte every 50 ms: the whole head would take 11 s
                sock.send(bytes([byte]))
                sent += 1
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_all(sock)
    assert sent < len(head)  # closed before the head was whole
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "request_timeout"
    assert origins["baseline"].seen() == []


def test_a_connection_that_never_sends_a_request_is_closed(strict: Router) -> None:
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as sock:
        assert read_all(sock) == b""  # closed (idle: no 408 for a request never begun)


def test_a_stalled_body_gets_408_and_the_upstream_request_is_aborted(
    strict: Router, origins: dict[str, Origin]
) -> None:
    origins["baseline"].forget()
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "request_timeout"
    assert origins["baseline"].seen() == []  # the upstream never got a whole request


def test_a_slow_but_moving_body_is_not_cut(strict: Router) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(6):  # 3 s in all, never 1 s without a byte
            yield b"x" * 10
            time.sleep(0.5)

    response = httpx.post(f"{strict.url}/upload", content=body(), timeout=10)
    assert response.status_code == 200 and response.json()["length"] == 60


def test_past_the_connection_limit_new_connections_get_503_and_old_ones_keep_working(
    origins: dict[str, Origin], tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("limit")
    router = start_router(tmp, routes_table(free_port(), origins), "--max-connections", "3")
    try:
        clients = [httpx.Client(base_url=router.url) for _ in range(3)]
        for client in clients:  # three kept-alive connections: the limit
            assert client.get("/echo").status_code == 200
        origins["baseline"].forget()
        with socket.create_connection(("127.0.0.1", router.port), timeout=5) as sock:
            refused = read_all(sock)
        assert refused.startswith(b"HTTP/1.1 503 ")
        assert b"Connection: close" in refused and b"sandboxd-route: baseline" in refused
        assert json.loads(refused.partition(b"\r\n\r\n")[2])["error"] == "overloaded"
        assert all(client.get("/echo").status_code == 200 for client in clients)
        assert len(origins["baseline"].seen()) == 3  # the refused connection reached nothing
        clients.pop().close()
        poll.until(  # the freed slot is taken once the router saw the close
            lambda: httpx.get(f"{router.url}/echo").status_code == 200,
            timeout=10,
            what="a connection closed by its client to free its slot",
        )
        for client in clients:
            client.close()
        err = (tmp / "router.err").read_text()
        assert "Traceback" not in err
    finally:
        router.proc.terminate()
        router.proc.wait()
