"""A body that arrives while the upstream connection is still being opened is not all read."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest

from tests.router.conftest import KEYS, Origin, Router, routes_table, start_router
from tests.support.server import free_port


@pytest.fixture
def stuck_fork(
    origins: dict[str, Origin], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Router]:
    """A router whose pr-1 fork accepts no connection: its accept queue is full, so a connect
    to it hangs (SYNs dropped) until the router's connect timeout (5 s)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue; the connects past it stay pending
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    table = routes_table(free_port(), origins)
    table["routes"][KEYS["pr-1"]]["forks"]["echo"] = f"http://127.0.0.1:{port}"
    router = start_router(tmp_path_factory.mktemp("stuck"), table)
    yield router
    router.proc.terminate()
    router.proc.wait()
    for s in [*fillers, listener]:
        s.close()


def test_a_fast_body_to_a_connecting_upstream_is_not_read_into_memory(stuck_fork: Router) -> None:
    total = 64 << 20
    head = (b"POST /upload HTTP/1.1\r\nHost: x\r\nbaggage: sandbox=%b\r\n"
            b"Content-Length: %d\r\n\r\n" % (KEYS["pr-1"].encode(), total))  # fmt: skip
    with socket.create_connection(("127.0.0.1", stuck_fork.port)) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        chunk = b"x" * 65536
        sent = 0
        while sent < total:
            # Until the router answers (its connect to the fork times out after 5 s): if it
            # does not read the body meanwhile, the socket stays unwritable until then.
            answered, _, _ = select.select([sock], [sock], [])
            if answered:
                break
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                continue
    # what the kernel buffers on both sides, plus one read of the router's: far from 64 MiB
    assert sent < 24 << 20, sent
