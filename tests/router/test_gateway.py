"""Gateway mode: one listener, the service picked from the Host header."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.router.conftest import KEYS, Origin, Router, routes_table, start_router
from tests.support import poll
from tests.support.server import free_port


@pytest.fixture(scope="module")
def gateway(
    origins: dict[str, Origin], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Router, int]]:
    port = free_port()
    router = start_router(
        tmp_path_factory.mktemp("gw"),
        routes_table(free_port(), origins),
        "--gateway-port",
        str(port),
    )
    poll.port_open(port, timeout=15)
    yield router, port
    router.proc.terminate()
    router.proc.wait()


@pytest.mark.parametrize(
    "host", ["echo", "echo.sandboxd.svc.cluster.local", "ECHO.example.com:8080"]
)
def test_the_first_dns_label_of_host_picks_the_service(
    gateway: tuple[Router, int], host: str
) -> None:
    _, port = gateway
    url = f"http://127.0.0.1:{port}/echo"
    assert httpx.get(url, headers={"Host": host}).json()["origin"] == "baseline"
    keyed = httpx.get(url, headers={"Host": host, "baggage": f"sandbox={KEYS['pr-1']}"})
    assert keyed.json()["origin"] == "fork1" and keyed.headers["sandboxd-route"] == "sandbox=pr-1"
    received = dict(keyed.json()["received"]["headers"])
    assert received["X-Forwarded-Host"] == host


def test_an_unknown_host_is_a_404_not_a_guess(gateway: tuple[Router, int]) -> None:
    _, port = gateway
    response = httpx.get(f"http://127.0.0.1:{port}/echo", headers={"Host": "nosuch.example.com"})
    assert response.status_code == 404 and response.json()["error"] == "unknown_service"
