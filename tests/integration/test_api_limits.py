"""What the server reads before the app (and before the token check) is bounded: a request head
past 64 KiB is refused, not buffered without end."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import Sandboxd, running_sandboxd


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandboxd]:
    with running_sandboxd(tmp_path_factory.mktemp("limits") / "data") as s:
        yield s


def exchange(server: Sandboxd, head: bytes) -> bytes:
    """Send `head` (as far as the server reads it) and return its answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        # Refused before the whole head was read: the answer is there all the same.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(head)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer:
                break
        return answer


def test_a_head_over_64_kib_is_refused_without_a_token(server: Sandboxd) -> None:
    head = b"GET /v1/sandboxes HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (4 << 20) + b"\r\n\r\n"

    answer = exchange(server, head)

    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


def test_a_url_over_64_kib_is_refused(server: Sandboxd) -> None:
    head = b"GET /v1/sandboxes?label=" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n"

    assert exchange(server, head).startswith(b"HTTP/1.1 400")


def test_an_ordinary_head_is_served(server: Sandboxd) -> None:
    auth = f"Authorization: Bearer {server.token}\r\n".encode()
    head = (
        b"GET /v1/sandboxes HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8192 + b"\r\n" + auth + b"\r\n"
    )

    assert exchange(server, head).startswith(b"HTTP/1.1 200")
    assert Path(server.data_dir).is_dir()
