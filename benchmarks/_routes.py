"""Route tables (the JSON of `GET /v1/routes`) and starting `sandboxd-router` on them."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from benchmarks._procs import HarnessError, Processes, free_port, venv_bin

BAGGAGE_KEY = "sandbox"


def key_of(i: int) -> str:
    """Routing key of sandbox i: 16 characters of [0-9a-f], like the control plane's."""
    return hashlib.sha256(f"bench-{i}".encode()).hexdigest()[:16]


def keys(n: int) -> dict[str, str]:
    """Routing key → sandbox name for `n` sandboxes."""
    return {key_of(i): f"pr-{i}" for i in range(n)}


def baggage(key: str) -> str:
    """3 members, the routing key in the middle, as the method asks."""
    return f"userid=alice,{BAGGAGE_KEY}={key},tenant=acme"


@dataclass(frozen=True)
class Service:
    name: str
    baseline_port: int
    fork_port: int


@dataclass(frozen=True)
class Router:
    name: str
    ports: dict[str, int]  # service → router port
    admin_port: int
    sandboxes: int


def write_table(path: Path, *, services: list[Service], ports: dict[str, int], n: int) -> None:
    """`n` sandboxes, each forking every service to the service's fork port."""
    table = {
        "baggageKey": BAGGAGE_KEY,
        "services": [
            {
                "name": s.name,
                "protocol": "http",
                "routerPort": ports[s.name],
                "baseline": f"http://127.0.0.1:{s.baseline_port}",
            }
            for s in services
        ],
        "routes": {
            key: {
                "sandbox": name,
                "forks": {s.name: f"http://127.0.0.1:{s.fork_port}" for s in services},
                "faults": [],
            }
            for key, name in keys(n).items()
        },
        "version": f"bench-{n}",
    }
    path.write_text(json.dumps(table, separators=(",", ":")))


def argv(*, admin_port: int, source: list[str]) -> list[str]:
    return [venv_bin("sandboxd-router"), *source, "--host", "127.0.0.1",
            "--admin-port", str(admin_port), "--access-log", "off"]  # fmt: skip


def start_static(
    procs: Processes, name: str, *, work_dir: Path, services: list[Service], n: int
) -> Router:
    """A router on core 0 serving a static table of `n` sandboxes; waits until it serves."""
    ports = {s.name: free_port() for s in services}
    table = work_dir / f"{name}-routes.json"
    write_table(table, services=services, ports=ports, n=n)
    router = Router(name, ports, free_port(), n)
    procs.start(name, argv(admin_port=router.admin_port, source=["--routes-file", str(table)]),
                cpu=0)  # fmt: skip
    wait_ready(procs, router)
    return router


def wait_ready(procs: Processes, router: Router, *, timeout: float = 60) -> dict[str, object]:
    """Until /healthz reports the table, then until every service port accepts."""
    deadline = time.monotonic() + timeout
    while True:
        procs.check_alive(router.name)
        health = healthz(router.admin_port)
        if health is not None and health.get("sandboxes") == router.sandboxes:
            break
        if time.monotonic() > deadline:
            raise HarnessError(f"{router.name}: no table after {timeout}s (/healthz: {health})")
        time.sleep(0.05)
    for port in router.ports.values():
        procs.wait_accepting(router.name, port, timeout=max(1, deadline - time.monotonic()))
    return health


def healthz(admin_port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/healthz", timeout=2) as r:
            body = json.loads(r.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return body if isinstance(body, dict) else None
