"""A service port the router cannot bind yet (another process holds it) is tried again every
second, not only at the next route table, and `/healthz` says which ports are not listening."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.router.conftest import Origin, Router, routes_table, start_router
from tests.support import poll
from tests.support.server import free_port


@pytest.fixture
def squatter() -> Iterator[socket.socket]:
    """A listening socket on a port the router's table will want."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
        s.listen()
        yield s


def health(router: Router) -> dict[str, object]:
    return dict(httpx.get(f"http://127.0.0.1:{router.admin}/healthz").json())


def test_a_port_held_by_another_process_is_bound_once_it_is_free(
    origins: dict[str, Origin], squatter: socket.socket, tmp_path: Path
) -> None:
    port = squatter.getsockname()[1]
    router = start_router(tmp_path, routes_table(port, origins))  # (the squatter answers)
    try:
        reported = poll.until(
            lambda: health(router).get("notListening"), bool, timeout=15, what="the unbound port"
        )
        assert isinstance(reported, dict) and list(reported) == [str(port)]
        squatter.close()  # the other process lets go: no new table comes
        poll.port_open(port, timeout=10)
        answer = httpx.get(f"http://127.0.0.1:{port}/echo")
        assert answer.status_code == 200 and answer.headers["sandboxd-route"] == "baseline"
        assert health(router)["notListening"] == {}
    finally:
        router.proc.terminate()
        router.proc.wait()
