"""Streamable HTTP on the wire: the router answers exactly what the upstream answers.

Each case is a short exchange sent once straight to an upstream and once through the router;
statuses, the headers MCP clients act on and the bodies (SSE bytes included, CRLF and all) must
be the same. `Mcp-Session-Id` values differ per session, so only their presence is compared.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest

from tests.router.mcp.conftest import KEYS, Topology

ACCEPT_BOTH = "application/json, text/event-stream"
LEGACY = "2025-11-25"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": LEGACY,
        "capabilities": {},
        "clientInfo": {"name": "wire-test", "version": "1.0.0"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
LIST_TOOLS = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
COMPARED_HEADERS = ("content-type", "allow", "cache-control", "x-accel-buffering")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str | None], ...]
    has_session_id: bool
    body: bytes
    route: str | None
    content_encoding: str | None
    any_route: bool = False
    """Set where either route is right: after DELETE the router may or may not still map the
    ended session (it forgets on DELETE or on the upstream's 404)."""


async def send(
    http: httpx2.AsyncClient,
    method: str,
    url: str,
    *,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    read_body: bool = True,
) -> tuple[Answer, str | None]:
    """One request; the body is read to its end unless it is an open event stream."""
    content = json.dumps(body).encode() if body is not None else None
    all_headers = {"content-type": "application/json"} if content else {}
    all_headers |= headers or {}
    async with http.stream(method, url, content=content, headers=all_headers) as response:
        raw = await response.aread() if read_body else b""
    answer = Answer(
        status=response.status_code,
        headers=tuple((name, response.headers.get(name)) for name in COMPARED_HEADERS),
        has_session_id="mcp-session-id" in response.headers,
        body=raw,
        route=response.headers.get("sandboxd-route"),
        content_encoding=response.headers.get("content-encoding"),
    )
    return answer, response.headers.get("mcp-session-id")


Case = Callable[[httpx2.AsyncClient, str, dict[str, str]], Awaitable[list[Answer]]]


async def not_acceptable(http: httpx2.AsyncClient, url: str, h: dict[str, str]) -> list[Answer]:
    answer, _ = await send(
        http, "POST", url, body=INITIALIZE, headers=h | {"accept": "application/json"}
    )
    return [answer]


async def unknown_session(http: httpx2.AsyncClient, url: str, h: dict[str, str]) -> list[Answer]:
    headers = h | {
        "accept": ACCEPT_BOTH,
        "mcp-session-id": "f" * 32,
        "mcp-protocol-version": LEGACY,
    }
    answer, _ = await send(http, "POST", url, body=LIST_TOOLS, headers=headers)
    return [answer]


async def missing_session(http: httpx2.AsyncClient, url: str, h: dict[str, str]) -> list[Answer]:
    headers = h | {"accept": ACCEPT_BOTH, "mcp-protocol-version": LEGACY}
    answer, _ = await send(http, "POST", url, body=INITIALIZED, headers=headers)
    return [answer]


async def stateless_get(http: httpx2.AsyncClient, url: str, h: dict[str, str]) -> list[Answer]:
    headers = h | {"accept": "text/event-stream", "mcp-protocol-version": "2026-07-28"}
    answer, _ = await send(http, "GET", url, headers=headers)
    return [answer]


async def options(http: httpx2.AsyncClient, url: str, h: dict[str, str]) -> list[Answer]:
    answer, _ = await send(http, "OPTIONS", url, headers=h)
    return [answer]


async def session_lifecycle(http: httpx2.AsyncClient, url: str, h: dict[str, str]) -> list[Answer]:
    """initialize (SSE) → initialized (202) → GET stream → tools/list (SSE) → DELETE → 404.

    `h` is only sent with `initialize`: everything after it must follow the session id.
    """
    init, session = await send(
        http, "POST", url, body=INITIALIZE, headers=h | {"accept": ACCEPT_BOTH}
    )
    assert session, init
    same = {"mcp-session-id": session, "mcp-protocol-version": LEGACY}
    posts = same | {"accept": ACCEPT_BOTH}
    initialized, _ = await send(http, "POST", url, body=INITIALIZED, headers=posts)
    stream, _ = await send(
        http, "GET", url, headers=same | {"accept": "text/event-stream"}, read_body=False
    )
    tools, _ = await send(http, "POST", url, body=LIST_TOOLS, headers=posts)
    ended, _ = await send(http, "DELETE", url, headers=same)
    after, _ = await send(http, "POST", url, body=LIST_TOOLS, headers=posts)
    return [init, initialized, stream, tools, ended, dataclasses.replace(after, any_route=True)]


CASES = [
    pytest.param(not_acceptable, id="406-not-acceptable"),
    pytest.param(unknown_session, id="404-unknown-session"),
    pytest.param(missing_session, id="400-missing-session"),
    pytest.param(stateless_get, id="405-get-at-2026-07-28"),
    pytest.param(options, id="405-options"),
    pytest.param(session_lifecycle, id="session-lifecycle"),
]


def comparable(answer: Answer) -> Answer:
    """What must not change on the way through: all but the router's own route header."""
    return dataclasses.replace(answer, route=None)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    ("baggage", "instance", "route"),
    [
        pytest.param(None, "baseline", "baseline", id="baseline"),
        pytest.param(f"sandbox={KEYS['pr-1']}", "fork-pr-1", "sandbox=pr-1", id="fork"),
    ],
)
async def test_router_answers_what_the_upstream_answers(
    topology: Topology, case: Case, baggage: str | None, instance: str, route: str
) -> None:
    headers = {"baggage": baggage} if baggage else {}
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30)) as http:
        direct = await case(http, topology.upstream(instance).mcp_url, headers)
        routed = await case(http, topology.url, headers)
    assert [comparable(a) for a in routed] == [comparable(a) for a in direct]
    checked = [a.route for a in routed if not a.any_route]
    assert checked == [route] * len(checked)
    assert all(a.content_encoding is None for a in routed)


async def test_sse_answer_keeps_its_framing(topology: Topology) -> None:
    """The sessionful era answers `initialize` with one SSE event, CRLF-terminated lines."""
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30)) as http:
        [init, *_] = await session_lifecycle(http, topology.url, {})
    assert init.status == 200
    assert dict(init.headers)["content-type"] == "text/event-stream"
    assert init.body.startswith(b"event: message\r\ndata: {"), init.body
    assert init.body.endswith(b"}\r\n\r\n"), init.body
    data = init.body.split(b"\r\n")[1].removeprefix(b"data: ")
    assert json.loads(data)["result"]["serverInfo"]["name"] == "version-baseline"
