"""Signals from several routers, through restarts (issue 13): two real routers follow one
control plane; one is restarted, then the control plane is; the sandbox's and the baseline's
request counts are exactly what the client sent, through both routers, with nothing lost and
nothing counted twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import wait_phase
from tests.support import poll
from tests.support.server import Sandboxd, free_port, running_sandboxd

pytestmark = pytest.mark.slow
HOSTS = ("127.0.0.2", "127.0.0.3")  # two routers on the same catalog ports, apart by address


def catalog(path: Path, router_port: int, baseline_port: int) -> Path:
    service = {"name": "web", "protocol": "http", "routerPort": router_port,
               "baseline": {"url": f"http://127.0.0.1:{baseline_port}", "health": "/"}}  # fmt: skip
    path.write_text(json.dumps({"services": [service]}))
    return path


@contextmanager
def baseline(port: int) -> Iterator[None]:
    """Not sandboxd's child: it keeps serving while the control plane restarts."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        poll.port_open(port, timeout=15)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def router(server: Sandboxd, host: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    token = server.data_dir / "router-token"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandboxd_router", "--control-url", server.url,
             "--token-file", str(token), "--host", host, "--access-log", "off"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def send(host: str, port: int, n: int, key: str | None) -> None:
    headers = {"baggage": f"sandbox={key}"} if key else {}
    with httpx.Client(base_url=f"http://{host}:{port}", headers=headers, timeout=10) as c:
        for _ in range(n):
            assert c.get("/").status_code == 200


def serving(host: str, port: int, key: str) -> bool:
    """The router at `host` routes the sandbox's key (its table has it): one request, which
    is counted like the others (the caller adds it)."""
    try:
        answer = httpx.get(f"http://{host}:{port}/", headers={"baggage": f"sandbox={key}"})
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


def counts(client: httpx.Client) -> tuple[int, int]:
    body = client.get("/v1/sandboxes/sig/metrics", params={"window": "10m"}).json()
    (web,) = body["services"]
    return web["sandbox"]["requests"], web["baseline"]["requests"]


def test_two_routers_and_their_restarts_lose_and_double_nothing(tmp_path: Path) -> None:
    port, upstream = free_port(), free_port()
    cat = catalog(tmp_path / "sandboxd.yaml", port, upstream)
    sent = {"sandbox": 0, "baseline": 0}
    with baseline(upstream), running_sandboxd(tmp_path / "data", catalog=cat) as server:
        with server.client() as c:
            key = c.post("/v1/sandboxes", json={"name": "sig"}).json()["routingKey"]
            wait_phase(c, "sig", "Ready")
        with (
            router(server, HOSTS[0], tmp_path / "a.log") as a,
            router(server, HOSTS[1], tmp_path / "b.log"),
        ):
            for host in HOSTS:
                poll.until(lambda h=host: serving(h, port, key), timeout=30, what=f"{host}")
                sent["sandbox"] += 1
            send(HOSTS[0], port, 30, key)
            send(HOSTS[1], port, 20, key)
            send(HOSTS[1], port, 25, None)
            sent["sandbox"] += 50
            sent["baseline"] += 25
            # router A restarts (a graceful stop: its last records are reported on the way out)
            a.send_signal(signal.SIGTERM)
            a.wait(30)
            with router(server, HOSTS[0], tmp_path / "a2.log"):
                poll.until(lambda: serving(HOSTS[0], port, key), timeout=30, what="router A again")
                sent["sandbox"] += 1
                send(HOSTS[0], port, 10, key)
                send(HOSTS[0], port, 5, None)
                sent["sandbox"] += 10
                sent["baseline"] += 5
                with server.client() as c:
                    want = (sent["sandbox"], sent["baseline"])
                    poll.until(lambda: counts(c), lambda n: n == want, timeout=20,
                               what=f"{want} requests counted")  # fmt: skip
                # the control plane restarts: the routers' posts fail meanwhile and are sent again
                server.stop()
                send(HOSTS[0], port, 7, key)  # (routed by the last table the routers hold)
                send(HOSTS[1], port, 3, None)
                sent["sandbox"] += 7
                sent["baseline"] += 3
                server.start()
                with server.client() as c:
                    want = (sent["sandbox"], sent["baseline"])
                    got = poll.until(lambda: counts(c), lambda n: n == want, timeout=30,
                                     what=f"{want} requests counted after the restart")  # fmt: skip
                    assert got == want
                    records = c.get("/v1/sandboxes/sig/requests", params={"limit": "1000"})
                    assert len(records.json()["items"]) == sent["sandbox"]
