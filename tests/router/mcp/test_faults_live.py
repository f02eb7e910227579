"""A live change of a sandbox's faults (a new route table from the control plane's long poll)
reaches open connections: a keep-alive HTTP connection and an MCP session both carry on, and
their next requests get the new faults."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.router.conftest import Origin, start_origin
from tests.router.mcp.conftest import KEYS
from tests.router.mcp.processes import Upstream, http_ready, mcp_service, router_argv, running
from tests.router.mcp.sdk import connect, whoami
from tests.support import poll
from tests.support.server import free_port

KEY = f"sandbox={KEYS['pr-1']}"


class ControlPlane:
    """`GET /v1/routes` with the long poll the router uses (ETag, `If-None-Match`, `wait`)."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.changed = threading.Condition()
        self.version = 1
        self.table = table
        self.port = free_port()
        plane = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                wait = float(parse_qs(urlsplit(self.path).query).get("wait", ["0"])[0])
                seen = self.headers.get("If-None-Match")
                with plane.changed:
                    plane.changed.wait_for(lambda: seen != f'"{plane.version}"', timeout=wait)
                    etag, body = f'"{plane.version}"', json.dumps(plane.table).encode()
                if seen == etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, table: dict[str, Any]) -> None:
        with self.changed:
            self.table = table
            self.version += 1
            self.changed.notify_all()


def table(
    echo: Origin, tools: Upstream, faults: list[dict[str, Any]], ports: dict[str, int]
) -> dict[str, Any]:
    return {
        "baggageKey": "sandbox",
        "services": [
            {"name": "echo", "protocol": "http", "routerPort": ports["echo"], "baseline": echo.url},
            {**mcp_service("tools", baseline=tools.root), "routerPort": ports["tools"]},
        ],
        "routes": {KEYS["pr-1"]: {"sandbox": "pr-1", "forks": {}, "faults": faults}},
        "version": "live",
    }


FAULTS = [
    {"id": "err", "service": "echo", "kind": "http_error", "path": "/err"},
    {"id": "tool", "service": "tools", "kind": "tool_error", "tool": "fail_tool", "message": "no"},
]


@contextmanager
def live_router(plane: ControlPlane, log_dir: Path, ports: dict[str, int]) -> Iterator[None]:
    admin = free_port()
    argv = [*router_argv(), "--control-url", f"http://127.0.0.1:{plane.port}", "--token", "t",
            "--host", "127.0.0.1", "--admin-port", str(admin)]  # fmt: skip
    healthy = http_ready(f"http://127.0.0.1:{admin}/healthz")

    def ready() -> bool:
        return healthy() and all(poll.accepts(p) for p in ports.values())

    with running("router", argv, log=log_dir / "router.log", ready=ready):
        yield


def get(s: socket.socket, path: str) -> bytes:
    """One request on an open connection, and its (Content-Length framed) response."""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nbaggage: {KEY}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += s.recv(65536)
    return head


@pytest.fixture
def echo() -> Iterator[Origin]:
    origin = start_origin("baseline")
    yield origin
    origin.proc.terminate()
    origin.proc.wait()


async def test_a_live_fault_change_keeps_connections_and_sessions(
    upstreams: dict[str, Upstream], echo: Origin, tmp_path: Path
) -> None:
    ports = {"echo": free_port(), "tools": free_port()}
    plane = ControlPlane(table(echo, upstreams["baseline"], [], ports))
    with (
        live_router(plane, tmp_path, ports),
        socket.create_connection(("127.0.0.1", ports["echo"]), timeout=10) as kept,
    ):
        url = f"http://127.0.0.1:{ports['tools']}/mcp"
        async with connect(url, mode="legacy", headers={"baggage": KEY}) as (client, seen):
            before = await whoami(client)
            assert get(kept, "/err").startswith(b"HTTP/1.1 200 ")

            plane.publish(table(echo, upstreams["baseline"], FAULTS, ports))
            fresh = f"http://127.0.0.1:{ports['echo']}/err"
            poll.until(lambda: httpx.get(fresh, headers={"baggage": KEY}).status_code == 503,
                       timeout=10, what="the new table")  # fmt: skip

            head = get(kept, "/err")  # the same connection, the new faults
            assert (
                head.startswith(b"HTTP/1.1 503 ") and b"sandboxd-fault: http_error; id=err" in head
            )
            assert get(kept, "/echo").startswith(b"HTTP/1.1 200 ")
            result = await client.call_tool("fail_tool", {})
            after = await whoami(client)
    assert result.is_error and "no" in str(result.content)
    assert after["sessionId"] == before["sessionId"] is not None  # the session survived
    assert "tool_error; id=tool" in seen.faults
