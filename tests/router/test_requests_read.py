"""What the router reads of a request: MCP bodies (bounded, never a 5xx), targets, Host, Expect."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.router.conftest import KEYS, Origin, Router, raw, routes_table, start_router
from tests.support.server import free_port

KEYED = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
         "params": {"name": "t", "_meta": {"baggage": f"sandbox={KEYS['pr-1']}"}}}  # fmt: skip


@pytest.fixture(scope="module")
def mcp(origins: dict[str, Origin], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    tmp = tmp_path_factory.mktemp("mcp-bodies")
    table = routes_table(free_port(), origins, protocol="mcp")
    r = start_router(tmp, table, "--mcp-body-budget", "100000")
    yield r
    r.proc.terminate()
    r.proc.wait()


def healthz(router: Router) -> dict[str, int]:
    return dict(httpx.get(f"http://127.0.0.1:{router.admin}/healthz").json())


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"a":' * 100_000,
        b'{"params": {"_meta": {"baggage": "sandbox=\\ud800"}}}',  # a lone surrogate
        b'{"id": 1' + b"9" * 5000 + b"}",  # past int's digit limit
        b"\xff\xfe\xfd not utf-8",
    ],
    ids=["nested-lists", "nested-objects", "lone-surrogate", "huge-number", "invalid-utf8"],
)
def test_an_mcp_body_the_router_cannot_read_goes_to_the_baseline(mcp: Router, body: bytes) -> None:
    response = httpx.post(
        f"{mcp.url}/mcp", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert response.headers["sandboxd-route"] == "baseline"
    assert response.json()["origin"] == "baseline"
    assert "Traceback" not in (mcp.log.parent / "router.err").read_text()


def test_mcp_bodies_held_across_connections_stay_within_the_budget(mcp: Router) -> None:
    assert httpx.post(f"{mcp.url}/mcp", json=KEYED).headers["sandboxd-route"] == "sandbox=pr-1"
    with socket.create_connection(("127.0.0.1", mcp.port), timeout=5) as held:
        held.sendall(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 90000\r\n\r\n"
                     + b" " * 80_000)  # fmt: skip
        for _ in range(200):
            if healthz(mcp)["heldBodyBytes"] == 80_000:
                break
        assert healthz(mcp)["heldBodyBytes"] == 80_000
        padded = json.dumps(KEYED).encode() + b" " * 30_000  # 110 kB held in all: over budget
        response = httpx.post(f"{mcp.url}/mcp", content=padded)
        assert response.status_code == 200
        assert response.headers["sandboxd-route"] == "baseline"  # routed without reading it
        assert healthz(mcp)["heldBodyBytes"] == 80_000
    for _ in range(200):
        if healthz(mcp)["heldBodyBytes"] == 0:
            break
    assert healthz(mcp)["heldBodyBytes"] == 0  # a client gone: its held bytes are freed


def test_an_mcp_post_expecting_100_continue_gets_it_from_the_router(
    mcp: Router, origins: dict[str, Origin]
) -> None:
    origins["fork1"].forget()
    body = json.dumps(KEYED).encode()
    with socket.create_connection(("127.0.0.1", mcp.port), timeout=5) as sock:
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))  # fmt: skip
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ") and b"sandboxd-route: sandbox=pr-1" in answer
    (seen,) = origins["fork1"].seen()
    assert "expect" not in {k.lower() for k, _ in seen["headers"]}  # the body came whole


def test_an_absolute_form_target_goes_upstream_in_origin_form(
    router: Router, origins: dict[str, Origin]
) -> None:
    origins["baseline"].forget()
    answer = raw(router.port, b"GET http://Service.example:8080/echo?x=1#frag HTTP/1.1\r\n"
                              b"Host: ignored\r\nConnection: close\r\n\r\n")  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 200 ")
    (seen,) = origins["baseline"].seen()
    assert seen["target"] == "/echo?x=1"
    assert dict(seen["headers"])["X-Forwarded-Host"] == "Service.example:8080"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET http://user@host/echo HTTP/1.1\r\nHost: host\r\n\r\n",
        b"GET ftp://host/echo HTTP/1.1\r\nHost: host\r\n\r\n",
        b"GET echo HTTP/1.1\r\nHost: host\r\n\r\n",
    ],
    ids=["two-hosts", "no-host", "userinfo", "other-scheme", "relative"],
)
def test_host_and_target_mistakes_get_400(
    router: Router, origins: dict[str, Origin], request_bytes: bytes
) -> None:
    origins["baseline"].forget()
    answer = raw(router.port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
    assert origins["baseline"].seen() == []


def test_http_1_0_needs_no_host(router: Router) -> None:
    assert raw(router.port, b"GET /echo HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200 ")
