"""The real processes these tests talk to, each on a free loopback port.

- `version_server`: tests/fixtures/mcp/version_server.py, an SDK server that names itself;
- `sandboxd_router`: the real `sandboxd-router` on a static `--routes-file`;
- `node_server`: a Node fixture server (server-everything), bound to loopback by a preload.

Every process logs to a file under the test's directory; a process that dies or never becomes
ready fails the test with the tail of that log, so a broken router reads as a broken router.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support import poll
from tests.support.server import free_port

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "mcp"
VERSION_SERVER = FIXTURES / "version_server.py"


@dataclass
class Process:
    """A subprocess whose output goes to `log`."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, size: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else ""

    def fail(self, why: str) -> RuntimeError:
        return RuntimeError(f"{self.name}: {why}\n--- {self.log} ---\n{self.log_tail()}")

    def wait_until(self, ready: Callable[[], bool], *, timeout: float = 30) -> None:
        def probe() -> bool:
            if self.proc.poll() is not None:
                raise self.fail(f"exited with {self.proc.returncode} before it was ready")
            return ready()

        poll.until(probe, timeout=timeout, what=f"{self.name} to be ready", context=self.log_tail)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def http_ready(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    return ready


@contextmanager
def running(
    name: str,
    argv: list[str],
    *,
    log: Path,
    ready: Callable[[], bool],
    env: Mapping[str, str] | None = None,
) -> Iterator[Process]:
    """Start `argv`, wait until `ready()`, and stop it (SIGTERM, then SIGKILL) on exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=dict(env or os.environ)
        )
    process = Process(name=name, proc=proc, log=log)
    try:
        process.wait_until(ready)
        yield process
    finally:
        process.stop()


@dataclass(frozen=True)
class Upstream:
    """A fixture server: its name (what `whoami` answers), root URL and MCP endpoint."""

    name: str
    port: int
    process: Process

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.root}/mcp"


@contextmanager
def version_server(name: str, *, log_dir: Path) -> Iterator[Upstream]:
    port = free_port()
    argv = [
        sys.executable,
        str(VERSION_SERVER),
        "--name",
        name,
        "--port",
        str(port),
        "--access-log",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ready = http_ready(f"http://127.0.0.1:{port}/healthz")
    with running(name, argv, log=log_dir / f"{name}.log", ready=ready, env=env) as process:
        yield Upstream(name=name, port=port, process=process)


@dataclass(frozen=True)
class Router:
    """A running `sandboxd-router`: its route table and the port of each service."""

    routes: dict[str, Any]
    process: Process

    def port(self, service: str) -> int:
        ports = {s["name"]: s["routerPort"] for s in self.routes["services"]}
        return int(ports[service])

    def mcp_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.port(service)}/mcp"


def router_argv() -> list[str]:
    script = Path(sys.executable).parent / "sandboxd-router"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sandboxd_router"]


@contextmanager
def sandboxd_router(routes: dict[str, Any], *, log_dir: Path) -> Iterator[Router]:
    """Run the real router on `routes` (the `GET /v1/routes` JSON) until every listener answers."""
    log_dir.mkdir(parents=True, exist_ok=True)
    routes_file = log_dir / "routes.json"
    routes_file.write_text(json.dumps(routes, indent=2))
    admin = free_port()
    argv = [
        *router_argv(),
        *("--routes-file", str(routes_file)),
        *("--host", "127.0.0.1"),
        *("--admin-port", str(admin)),
        *("--access-log", str(log_dir / "router-access.log")),
        *("--record-file", str(log_dir / "records.jsonl")),  # every request's record
    ]
    healthy = http_ready(f"http://127.0.0.1:{admin}/healthz")
    ports = [int(s["routerPort"]) for s in routes["services"]]

    def ready() -> bool:
        return healthy() and all(poll.accepts(port) for port in ports)

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with running("sandboxd-router", argv, log=log_dir / "router.log", ready=ready, env=env) as p:
        yield Router(routes=routes, process=p)


def mcp_service(name: str, *, baseline: str) -> dict[str, Any]:
    """A catalog entry for an `mcp` service whose baseline is the URL `baseline`."""
    return {"name": name, "protocol": "mcp", "routerPort": free_port(), "baseline": baseline}


@contextmanager
def node_server(
    name: str, argv: list[str], *, port: int, log_dir: Path, env: Mapping[str, str] | None = None
) -> Iterator[Process]:
    """A Node server that takes `PORT` and calls `listen(PORT)`: bound to loopback by preload."""
    node = shutil.which("node")
    assert node is not None
    full = [node, "--require", str(FIXTURES / "loopback.cjs"), *argv]
    full_env = {**os.environ, **(env or {}), "PORT": str(port)}
    with running(
        name, full, log=log_dir / f"{name}.log", ready=lambda: poll.accepts(port), env=full_env
    ) as process:
        yield process
