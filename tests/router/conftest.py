"""A real router subprocess with a static route table, in front of real origin servers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import poll
from tests.support.server import free_port

ORIGIN = str(Path(__file__).resolve().parents[1] / "support" / "origin.py")
KEYS = {
    "pr-1": "key1aaaaaaaaaaa",
    "pr-2": "key2bbbbbbbbbbb",
    "pr-3": "key3ccccccccccc",
    "dead": "keydeadddddddddd",
}


@dataclass
class Origin:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/__seen").json())

    def forget(self) -> None:
        httpx.delete(f"{self.url}/__seen")


def start_origin(name: str) -> Origin:
    port = free_port()
    proc = subprocess.Popen([sys.executable, ORIGIN, str(port), name], stdout=subprocess.DEVNULL)
    poll.port_open(port, timeout=15)
    return Origin(name, port, proc)


@dataclass
class Router:
    port: int
    admin: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def routes_table(
    service_port: int, origins: dict[str, Origin], *, protocol: str = "http"
) -> dict[str, Any]:
    dead = free_port()  # nothing listens there
    forks = {
        "pr-1": origins["fork1"].url,
        "pr-2": origins["fork2"].url,
        "dead": f"http://127.0.0.1:{dead}",
    }
    return {
        "baggageKey": "sandbox",
        "services": [
            {
                "name": "echo",
                "protocol": protocol,
                "routerPort": service_port,
                "baseline": origins["baseline"].url,
            }
        ],
        "routes": {
            KEYS[name]: {
                "sandbox": name,
                "forks": {"echo": forks[name]} if name in forks else {},
                "faults": [],
            }
            for name in KEYS
        },
        "version": "test",
    }


def start_router(tmp: Path, table: dict[str, Any], *extra: str) -> Router:
    routes = tmp / "routes.json"
    routes.write_text(json.dumps(table))
    admin = free_port()
    log = tmp / "access.log"
    with (tmp / "router.err").open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandboxd_router", "--routes-file", str(routes),
             "--admin-port", str(admin), "--access-log", str(log), *extra],
            stderr=err,
        )  # fmt: skip
    poll.port_open(admin, timeout=15)
    port = table["services"][0]["routerPort"]
    poll.port_open(port, timeout=15)
    return Router(port, admin, proc, log)


@pytest.fixture(scope="module")
def origins() -> Iterator[dict[str, Origin]]:
    started = {name: start_origin(name) for name in ("baseline", "fork1", "fork2")}
    yield started
    for origin in started.values():
        origin.proc.terminate()
        origin.proc.wait()


@pytest.fixture(scope="module")
def router(
    origins: dict[str, Origin], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Router]:
    tmp = tmp_path_factory.mktemp("router")
    r = start_router(tmp, routes_table(free_port(), origins), "--upstream-timeout", "2")
    yield r
    r.proc.terminate()
    r.proc.wait()


def raw(port: int, data: bytes, *, timeout: float = 3) -> bytes:
    """Send raw bytes, read until the router closes (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)
