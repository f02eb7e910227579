"""Route tables (the JSON of `GET /v1/routes`) and starting `sandboxd-router` on them."""

from __future__ import annotations

import hashlib
import json
import socket
import time
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
    host: str = "127.0.0.1"
    """Its listeners' and admin's address: routers following one control plane listen on the
    same ports (the catalog's), each on its own loopback address."""


def decoys(service: str, n: int) -> list[dict[str, object]]:
    """`n` faults on `service` that the benchmark's requests (`GET /`, `GET /events?…`) match
    none of, though each is one a harness would set: a path elsewhere, a method they do not
    use, a latency on a path elsewhere. A request with the key still pays the engine's check."""
    shapes: list[dict[str, object]] = [
        {"kind": "http_error", "path": "/api/orders/*", "status": 503},
        {"kind": "rate_limit", "httpMethod": "POST", "retryAfter": 1},
        {"kind": "latency", "path": "/slow/*", "latencyMs": 200},
    ]
    out = []
    for i in range(n):
        fault = {"id": f"decoy-{i}", "service": service, **shapes[i % len(shapes)]}
        if i >= len(shapes) and "path" in fault:
            fault["path"] = f"{fault['path']}/{i}"  # more than three: each its own
        out.append(fault)
    return out


DECOY_HIT = ("GET", "/api/orders/1", "http_error; id=decoy-0")
"""A request that matches the first decoy (method, path, its `sandboxd-fault` value): proof
that the router compiled the decoys for the benchmarked key."""


def write_table(
    path: Path, *, services: list[Service], ports: dict[str, int], n: int, faults: int = 0
) -> None:
    """`n` sandboxes, each forking every service to the service's fork port, each with
    `faults` decoy faults (`decoys`) on every service."""
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
                "faults": [f for s in services for f in decoys(s.name, faults)],
            }
            for key, name in keys(n).items()
        },
        "version": f"bench-{n}",
    }
    path.write_text(json.dumps(table, separators=(",", ":")))


def argv(
    *, admin_port: int, source: list[str], record: bool = False, host: str = "127.0.0.1"
) -> list[str]:
    """`record=False` (`--record off`): every recording off — no record ring, no telemetry
    process, no access log: how the router benchmark's bars (DESIGN §9) were set and are
    measured. `record=True`: the router's default (record on, its access log to stdout, our
    log file; signals when it follows a control plane). The signals benchmark measures one
    beside the other."""
    return [
        venv_bin("sandboxd-router"),
        *source,
        "--host",
        host,
        "--admin-port",
        str(admin_port),
        *([] if record else ["--record", "off"]),
    ]


def start_static(
    procs: Processes,
    name: str,
    *,
    work_dir: Path,
    services: list[Service],
    n: int,
    faults: int = 0,
) -> Router:
    """A router on core 0 serving a static table of `n` sandboxes (each with `faults` decoys
    per service); waits until it serves."""
    ports = {s.name: free_port() for s in services}
    table = work_dir / f"{name}-routes.json"
    write_table(table, services=services, ports=ports, n=n, faults=faults)
    router = Router(name, ports, free_port(), n)
    procs.start(
        name, argv(admin_port=router.admin_port, source=["--routes-file", str(table)]), cpu=0
    )
    wait_ready(procs, router)
    return router


def wait_ready(procs: Processes, router: Router, *, timeout: float = 60) -> None:
    """Until /healthz reports the table, then until every service port accepts."""
    deadline = time.monotonic() + timeout
    while True:
        procs.check_alive(router.name)
        health = healthz(router.admin_port, host=router.host) or {}
        if health.get("status") == "ok" and health.get("sandboxes") == router.sandboxes:
            break
        if time.monotonic() > deadline:
            raise HarnessError(f"{router.name}: no table after {timeout}s (/healthz: {health})")
        time.sleep(0.05)
    for port in router.ports.values():
        while not _accepting(router.host, port):
            procs.check_alive(router.name)
            if time.monotonic() > deadline:
                raise HarnessError(f"{router.name}: nothing accepts on {router.host}:{port}")
            time.sleep(0.02)


def _accepting(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def healthz(admin_port: int, *, host: str = "127.0.0.1") -> dict[str, object] | None:
    """The router's /healthz JSON, or None; a raw socket, cheap enough to poll back to back."""
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection((host, admin_port), timeout=2) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return None
        parsed = json.loads(body)
    except (OSError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) else None
