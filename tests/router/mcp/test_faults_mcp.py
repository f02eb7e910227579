"""Faults on an `mcp` service, through the real router, with the official SDK client in every
mode (sessionful and 2026-07-28), the key in the header, in `_meta.baggage`, or only on the
session's `initialize`.

pr-1 forks `tools`, pr-3 does not (the baseline serves it): both carry the same faults, one
per (made-up) tool name, so the router answers calls to tools the server does not even have;
the upstream's own access log shows it was never called. pr-2 has none.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.router.mcp.conftest import KEYS, route
from tests.router.mcp.processes import Router, Upstream, mcp_service, sandboxd_router
from tests.router.mcp.sdk import MODES, connect, otel_baggage, whoami
from tests.support import poll

FAULTS: list[dict[str, Any]] = [
    {"id": "rpc", "service": "tools", "kind": "jsonrpc_error", "tool": "fail_rpc",
     "code": -32001, "message": "injected rpc"},
    {"id": "tool", "service": "tools", "kind": "tool_error", "tool": "fail_tool",
     "message": "the tool failed (injected)"},
    {"id": "http", "service": "tools", "kind": "http_error", "tool": "fail_http"},
    {"id": "limit", "service": "tools", "kind": "rate_limit", "tool": "fail_limit",
     "retryAfter": 3},
    {"id": "hang", "service": "tools", "kind": "timeout", "tool": "fail_timeout",
     "latencyMs": 300},
    {"id": "rst", "service": "tools", "kind": "reset", "tool": "fail_reset"},
    {"id": "slow", "service": "tools", "kind": "latency", "tool": "rel*", "latencyMs": 50},
    {"id": "listing", "service": "tools", "kind": "jsonrpc_error", "method": "resources/*"},
]  # fmt: skip
FAULTED = ["pr-1", "pr-3"]
UPSTREAM = {"pr-1": "fork-pr-1", "pr-2": "fork-pr-2", "pr-3": "baseline", None: "baseline"}


@pytest.fixture(scope="module")
def router(
    upstreams: dict[str, Upstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Router]:
    baseline = upstreams["baseline"].root
    routes = {
        "baggageKey": "sandbox",
        "services": [
            mcp_service("tools", baseline=baseline),
            mcp_service("other", baseline=baseline),
        ],
        "routes": {
            KEYS["pr-1"]: {**route("pr-1", tools=upstreams["fork-pr-1"].root), "faults": FAULTS},
            KEYS["pr-2"]: route("pr-2", tools=upstreams["fork-pr-2"].root),
            KEYS["pr-3"]: {**route("pr-3", other=upstreams["fork-pr-2"].root), "faults": FAULTS},
        },
        "version": "mcp-faults",
    }
    with sandboxd_router(routes, log_dir=tmp_path_factory.mktemp("mcp-faults")) as r:
        yield r


def key(sandbox: str | None) -> dict[str, str]:
    return {"baggage": f"sandbox={KEYS[sandbox]}"} if sandbox else {}


def posts(upstream: Upstream) -> int:
    """Requests the upstream served (its own uvicorn access log)."""
    return upstream.process.log_tail(10**9).count('"POST /mcp HTTP/1.1"')


async def served_so_far(client: Any, upstream: Upstream) -> int:
    """A normal call first (the SDK lists the tools after its first call, and the sessionful
    era's `initialized` notification is sent in the background): then the upstream's count."""
    await whoami(client)
    return posts(upstream)


async def unfaulted_marker(client: Any, upstream: Upstream, before: int) -> None:
    """A normal call: uvicorn logs a request as its response starts, so once this call is
    answered every POST the upstream served is counted: the faulted ones must not be."""
    await whoami(client)
    poll.until(lambda: posts(upstream) >= before + 1, timeout=10)
    assert posts(upstream) == before + 1, "the faulted call reached the upstream"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sandbox", FAULTED)
async def test_jsonrpc_and_tool_errors_are_answered_by_the_router(
    router: Router, upstreams: dict[str, Upstream], mode: str, sandbox: str
) -> None:
    upstream = upstreams[UPSTREAM[sandbox]]
    async with connect(router.mcp_url("tools"), mode=mode, headers=key(sandbox)) as (client, seen):
        before = await served_so_far(client, upstream)
        with pytest.raises(MCPError) as raised:
            await client.call_tool("fail_rpc", {})
        result = await client.call_tool("fail_tool", {})
        await unfaulted_marker(client, upstream, before)
    assert raised.value.error.code == -32001 and raised.value.error.message == "injected rpc"
    assert result.is_error
    assert [c.model_dump()["text"] for c in result.content] == ["the tool failed (injected)"]
    assert seen.faults == ["jsonrpc_error; id=rpc", "tool_error; id=tool"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tool", ["fail_http", "fail_limit", "fail_timeout"])
async def test_http_kinds_fail_the_call(
    router: Router, upstreams: dict[str, Upstream], mode: str, tool: str
) -> None:
    upstream = upstreams["fork-pr-1"]
    async with connect(router.mcp_url("tools"), mode=mode, headers=key("pr-1")) as (client, seen):
        before = await served_so_far(client, upstream)
        with pytest.raises(MCPError):
            await client.call_tool(tool, {})
        await unfaulted_marker(client, upstream, before)
    status = {"fail_http": 503, "fail_limit": 429, "fail_timeout": 504}[tool]
    assert [x.status for x in seen.items if x.fault] == [status]


@pytest.mark.parametrize("mode", MODES)
async def test_latency_answers_normally_with_the_fault_named(router: Router, mode: str) -> None:
    async with connect(router.mcp_url("tools"), mode=mode, headers=key("pr-1")) as (client, seen):
        result = await client.call_tool("release", {"token": "latency-test"})
    assert not result.is_error
    assert result.structured_content == {"instance": "fork-pr-1", "released": "latency-test"}
    assert seen.faults == ["latency; id=slow"]


@pytest.mark.parametrize("mode", MODES)
async def test_meta_baggage_alone_carries_the_faults(router: Router, mode: str) -> None:
    with otel_baggage(sandbox=KEYS["pr-1"]):
        async with connect(router.mcp_url("tools"), mode=mode) as (client, seen):
            result = await client.call_tool("fail_tool", {})
            answer = await whoami(client)
    assert result.is_error and answer["instance"] == "fork-pr-1"
    assert seen.faults == ["tool_error; id=tool"]


async def test_a_session_started_with_the_key_keeps_its_faults(router: Router) -> None:
    """The key rode on `initialize` only (the baseline-served pr-3): the session carries it."""

    def key_on_initialize(rpc_method: str | None) -> dict[str, str]:
        return key("pr-3") if rpc_method == "initialize" else {}

    async with connect(router.mcp_url("tools"), mode="legacy", extra_headers=key_on_initialize) as (
        client,
        seen,
    ):
        result = await client.call_tool("fail_tool", {})
        answer = await whoami(client)
    assert result.is_error and answer["instance"] == "baseline" and answer["baggage"] is None
    assert seen.faults == ["tool_error; id=tool"]


@pytest.mark.parametrize("sandbox", ["pr-1", "pr-3"])
async def test_a_session_started_without_the_key_gets_the_faults_of_a_later_key(
    router: Router, sandbox: str
) -> None:
    """The session started on the baseline and stays there (its id lives there), but a call
    that carries a key in its `baggage` header gets that sandbox's faults."""

    def key_after_initialize(rpc_method: str | None) -> dict[str, str]:
        return key(sandbox) if rpc_method == "tools/call" else {}

    async with connect(
        router.mcp_url("tools"), mode="legacy", extra_headers=key_after_initialize
    ) as (client, seen):
        result = await client.call_tool("fail_tool", {})
        answer = await whoami(client)
    assert result.is_error and answer["instance"] == "baseline"
    assert seen.faults == ["tool_error; id=tool"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sandbox", [None, "pr-2"])
async def test_other_keys_are_untouched(
    router: Router, upstreams: dict[str, Upstream], mode: str, sandbox: str | None
) -> None:
    upstream = upstreams[UPSTREAM[sandbox]]
    async with connect(router.mcp_url("tools"), mode=mode, headers=key(sandbox)) as (client, seen):
        before = await served_so_far(client, upstream)
        results = [await client.call_tool(t, {}) for t in ("fail_tool", "fail_http")]
        answer = await whoami(client)
        poll.until(lambda: posts(upstream) >= before + 3, timeout=10)
    assert all(r.is_error for r in results)  # the server's own answer: no such tool
    assert "injected" not in str(results[0].content)
    assert answer["instance"] == upstream.name
    assert seen.faults == []


def post(router: Router, body: dict[str, Any], *, accept: str) -> httpx.Response:
    headers = {
        **key("pr-1"), "accept": accept, "content-type": "application/json",
        "mcp-protocol-version": "2026-07-28", "mcp-method": str(body["method"]),
    }  # fmt: skip
    return httpx.post(router.mcp_url("tools"), json=body, headers=headers)


def call(tool: str, rpc_id: Any = 7) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": {"name": tool}}


def test_the_answer_is_json_unless_only_sse_is_accepted(router: Router) -> None:
    plain = post(router, call("fail_rpc", "abc"), accept="application/json, text/event-stream")
    assert plain.headers["content-type"] == "application/json"
    assert plain.json() == {
        "jsonrpc": "2.0", "id": "abc", "error": {"code": -32001, "message": "injected rpc"}
    }  # fmt: skip
    sse = post(router, call("fail_tool", 9), accept="text/event-stream")
    assert sse.headers["content-type"] == "text/event-stream"
    assert int(sse.headers["content-length"]) == len(sse.content)
    event = sse.text.split("\r\n")
    assert event[0] == "event: message" and event[1].startswith("data: ")
    assert json.loads(event[1][6:]) == {
        "jsonrpc": "2.0", "id": 9,
        "result": {"content": [{"type": "text", "text": "the tool failed (injected)"}],
                   "isError": True, "resultType": "complete"},  # (2026-07-28's schema)
    }  # fmt: skip


def test_a_method_glob_faults_other_methods(router: Router) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "resources/list", "params": {}}
    response = post(router, body, accept="application/json, text/event-stream")
    assert response.headers["sandboxd-fault"] == "jsonrpc_error; id=listing"
    assert response.json()["error"]["code"] == -32603


def test_reset_on_a_tool_call_is_a_connection_reset(
    router: Router, upstreams: dict[str, Upstream]
) -> None:
    body = json.dumps(call("fail_reset")).encode()
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: x\r\nbaggage: sandbox={KEYS['pr-1']}\r\n"
        f"Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", router.port("tools")), timeout=10) as s:
        s.sendall(head + body)
        with pytest.raises(ConnectionResetError):
            s.recv(65536)


def test_a_body_over_the_limit_is_passed_through_unfaulted(router: Router) -> None:
    body = call("fail_rpc")
    body["params"]["arguments"] = {"pad": "x" * (1 << 20)}  # past the MCP body limit
    response = post(router, body, accept="application/json, text/event-stream")
    assert "sandboxd-fault" not in response.headers
    assert response.headers["sandboxd-route"] == "sandbox=pr-1"  # the upstream answered
