"""The official MCP SDK client through the router, in every connection mode.

Routing for `mcp` services, first match wins: an existing session, the `baggage` header,
`params._meta.baggage`, the baseline. Each test names the instance that must answer `whoami`
and the `sandboxd-route` every HTTP response must carry.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest
from mcp.types import CallToolResult

from tests.router.mcp.conftest import KEYS, Topology
from tests.router.mcp.processes import Upstream
from tests.router.mcp.sdk import MODES, Exchanges, connect, otel_baggage, whoami

PR1 = f"sandbox={KEYS['pr-1']}"
PR2 = f"sandbox={KEYS['pr-2']}"

TARGETS = [
    pytest.param(PR1, "fork-pr-1", "sandbox=pr-1", id="pr-1"),
    pytest.param(PR2, "fork-pr-2", "sandbox=pr-2", id="pr-2"),
    pytest.param(None, "baseline", "baseline", id="no-baggage"),
    pytest.param(f"sandbox={KEYS['pr-3']}", "baseline", "baseline", id="sandbox-without-this-fork"),
    pytest.param("sandbox=rk-nobody", "baseline", "baseline", id="unknown-key"),
    pytest.param(
        f"tenant=acme, sandbox={KEYS['pr-2']};ttl=60,trace=x%2Cy",
        "fork-pr-2",
        "sandbox=pr-2",
        id="key-among-other-members",
    ),
]


def assert_answered_by(answer: dict[str, Any], topology: Topology, instance: str) -> None:
    assert answer["instance"] == instance, answer
    # The SDK server would answer 421 to a foreign Host; check the router set it all the same.
    assert answer["host"] == topology.upstream(instance).authority, answer


def assert_routes(seen: Exchanges, route: str) -> None:
    assert seen.items, "the client made no HTTP exchange"
    assert seen.routes == {route}, [x for x in seen.items if x.route != route]


@pytest.mark.parametrize("mode", MODES)
async def test_fixture_servers_name_themselves_when_called_directly(
    upstreams: dict[str, Upstream], mode: str
) -> None:
    """The control for everything below: no router, each instance says who it is."""
    for upstream in upstreams.values():
        async with connect(upstream.mcp_url, mode=mode) as (client, seen):
            answer = await whoami(client)
        assert answer["instance"] == upstream.name, answer
        assert answer["host"] == upstream.authority, answer
        assert seen.routes == {None}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("baggage", "instance", "route"), TARGETS)
async def test_baggage_header_picks_the_upstream(
    topology: Topology, mode: str, baggage: str | None, instance: str, route: str
) -> None:
    headers = {"baggage": baggage} if baggage else {}
    async with connect(topology.url, mode=mode, headers=headers) as (client, seen):
        answers = [await whoami(client), await whoami(client)]
    for answer in answers:
        assert_answered_by(answer, topology, instance)
        assert answer["baggage"] == baggage, "the baggage header must reach the upstream untouched"
    assert_routes(seen, route)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("instance", ["baseline", "fork-pr-1"])
async def test_list_tools_through_the_router_matches_direct(
    topology: Topology, mode: str, instance: str
) -> None:
    headers = {"baggage": PR1} if instance == "fork-pr-1" else {}
    upstream = topology.upstream(instance)
    async with connect(upstream.mcp_url, mode=mode, headers=headers) as (client, _):
        direct = await client.list_tools()
    async with connect(topology.url, mode=mode, headers=headers) as (client, seen):
        routed = await client.list_tools()
        answer = await whoami(client)
    assert {tool.name for tool in direct.tools} >= {"whoami", "gate", "release", "countdown"}
    assert routed.model_dump() == direct.model_dump()
    assert_answered_by(answer, topology, instance)
    assert_routes(seen, "baseline" if instance == "baseline" else "sandbox=pr-1")


@pytest.mark.parametrize("mode", ["auto", "2026-07-28"])
async def test_meta_baggage_alone_routes_each_stateless_request(
    topology: Topology, mode: str
) -> None:
    meta_baggage = f"tenant=acme,{PR1}"
    async with connect(topology.url, mode=mode) as (client, seen):
        to_fork = await whoami(client, meta={"baggage": meta_baggage})
        to_baseline = await whoami(client)
    assert_answered_by(to_fork, topology, "fork-pr-1")
    assert to_fork["baggage"] is None, "the key must have come from _meta only"
    assert to_fork["metaBaggage"] == meta_baggage
    assert_answered_by(to_baseline, topology, "baseline")
    assert seen.routes == {"baseline", "sandbox=pr-1"}


@pytest.mark.parametrize("mode", MODES)
async def test_opentelemetry_baggage_copied_into_meta_reaches_the_fork(
    topology: Topology, mode: str
) -> None:
    """An agent that sets OpenTelemetry baggage: the SDK puts it in every request's `_meta`."""
    with otel_baggage(sandbox=KEYS["pr-2"]):
        async with connect(topology.url, mode=mode) as (client, seen):
            answer = await whoami(client)
            tools = await client.list_tools()
    assert_answered_by(answer, topology, "fork-pr-2")
    assert answer["baggage"] is None, "the key must have come from _meta only"
    assert answer["metaBaggage"] == PR2
    assert "whoami" in {tool.name for tool in tools.tools}
    # In legacy mode the session (started by an `initialize` whose _meta carries the key) keeps
    # the `initialized` notification, the GET stream and the DELETE on the fork too.
    assert_routes(seen, "sandbox=pr-2")


async def test_meta_baggage_does_not_move_a_legacy_session(topology: Topology) -> None:
    """The session is matched first: a session on the baseline stays there."""
    async with connect(topology.url, mode="legacy") as (client, seen):
        answer = await whoami(client, meta={"baggage": PR1})
    assert_answered_by(answer, topology, "baseline")
    assert_routes(seen, "baseline")


async def test_legacy_session_started_on_a_fork_stays_there_without_baggage(
    topology: Topology,
) -> None:
    """An agent whose baggage only rode on `initialize`: the session id carries the rest."""

    def key_on_initialize(rpc_method: str | None) -> dict[str, str]:
        return {"baggage": PR1} if rpc_method == "initialize" else {}

    async with connect(topology.url, mode="legacy", extra_headers=key_on_initialize) as (
        client,
        seen,
    ):
        answers = [await whoami(client) for _ in range(3)]
        tools = await client.list_tools()
    for answer in answers:
        assert_answered_by(answer, topology, "fork-pr-1")
        assert answer["baggage"] is None, "only initialize may carry the key in this test"
        assert answer["sessionId"] == answers[0]["sessionId"] is not None
    assert "whoami" in {tool.name for tool in tools.tools}
    assert {"initialize", "notifications/initialized", "tools/list", "tools/call"} <= (
        seen.rpc_methods
    )
    assert "DELETE" in seen.http_methods
    assert_routes(seen, "sandbox=pr-1")


async def test_legacy_session_started_on_the_baseline_ignores_later_baggage(
    topology: Topology,
) -> None:
    def key_after_initialize(rpc_method: str | None) -> dict[str, str]:
        return {} if rpc_method == "initialize" else {"baggage": PR1}

    async with connect(topology.url, mode="legacy", extra_headers=key_after_initialize) as (
        client,
        seen,
    ):
        answer = await whoami(client)
    assert_answered_by(answer, topology, "baseline")
    assert answer["baggage"] == PR1, "the later request did carry the key"
    assert_routes(seen, "baseline")


@pytest.mark.parametrize("mode", MODES)
async def test_progress_is_streamed_before_the_result(topology: Topology, mode: str) -> None:
    """`gate` sends progress, then waits for `release`, which we send only once the progress
    event has arrived: a router that buffers the SSE answer deadlocks this until `gate` gives
    up (10 s) and answers `released: false`."""
    token = uuid.uuid4().hex
    progressed = anyio.Event()
    results: dict[str, CallToolResult] = {}

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        progressed.set()

    async with connect(topology.url, mode=mode, headers={"baggage": PR1}) as (client, seen):

        async def call_gate() -> None:
            arguments = {"token": token, "timeout": 10}
            results["gate"] = await client.call_tool(
                "gate", arguments, progress_callback=on_progress
            )

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call_gate)
            with anyio.fail_after(20):
                await progressed.wait()
            await client.call_tool("release", {"token": token})
    gate = results["gate"]
    assert gate.structured_content == {"instance": "fork-pr-1", "released": True}, (
        "the progress event only arrived with the final result: the SSE stream was buffered"
    )
    assert_routes(seen, "sandbox=pr-1")


@pytest.mark.parametrize("mode", MODES)
async def test_every_progress_event_arrives_in_order(topology: Topology, mode: str) -> None:
    events: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        events.append((progress, total, message))

    n = 40
    async with connect(topology.url, mode=mode, headers={"baggage": PR2}) as (client, _):
        result = await client.call_tool("countdown", {"n": n}, progress_callback=on_progress)
    assert result.structured_content == {"instance": "fork-pr-2", "steps": n}
    assert events == [(i, n, f"step {i}") for i in range(1, n + 1)]
