"""The troubleshooter example end to end, through real processes: sandboxd with its router and
the example's baselines, sandboxes made with the `sandbox` CLI, the agent called over HTTP and
cluster-mcp with the official MCP SDK client.

    no baggage          → agent v1, cluster-mcp v1   → a diagnosis
    schema-change's key → agent v1, cluster-mcp v2   → ok: false, naming the missing field
    fixed-agent's key   → agent v2, cluster-mcp v2   → a diagnosis

Which upstream served each MCP call is read from the router's access log, by trace id: the test
sends a `traceparent`, the agent forwards it on every MCP call.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.troubleshooter import SANDBOXES, Troubleshooter, running_troubleshooter
from tests.support import access_log, poll
from tests.support.procs import fork_pids

CRASHING_POD = "orders-api-5f6b7c8d9-q4m7z"


@dataclass(frozen=True)
class World:
    app: Troubleshooter
    before: dict[str, Any]
    """The baseline's answer before any sandbox existed."""
    baggage: dict[str, str]
    """sandbox name → the baggage header value that selects it."""


def stable(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without what differs per request."""
    return {k: v for k, v in answer.items() if k != "traceId"}


def traced(app: Troubleshooter, *, baggage: str | None) -> tuple[int, str | None, dict[str, Any]]:
    """Diagnose `demo` under a fresh trace id: (status, sandboxd-route, answer)."""
    trace_id = secrets.token_hex(16)
    headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    if baggage:
        headers["baggage"] = baggage
    response = app.http_post_diagnose(headers)
    answer = response.json()
    assert answer.get("traceId") == trace_id, "the agent must keep the caller's trace"
    return response.status_code, response.headers.get("sandboxd-route"), answer


def routes_of_trace(app: Troubleshooter, trace_id: str) -> set[tuple[str, str]]:
    """(service, route) of every request the router logged for `trace_id`, once the agent's
    and both MCP servers' lines are in (the log is written in batches, the agent's last)."""
    log = app.server.data_dir / "router" / "access.log"

    def routes() -> set[tuple[str, str]]:
        return {(e["service"], e["route"]) for e in access_log.entries(log, trace_id=trace_id)}

    return poll.until(
        routes,
        lambda seen: {service for service, _ in seen} >= {"agent", "cluster-mcp", "logs-mcp"},
        timeout=5,
        what=f"the agent's and both MCP servers' access-log lines of trace {trace_id}",
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_troubleshooter(tmp_path_factory.mktemp("troubleshooter")) as app:
        before = app.diagnose().json()
        baggage = {
            name: app.up(SANDBOXES / f"{name}.yaml")["baggage"]
            for name in ("schema-change", "fixed-agent")
        }
        yield World(app=app, before=before, baggage=baggage)


def test_three_outcomes_baseline_schema_break_and_fix(world: World) -> None:
    app = world.app
    status, route, baseline = traced(app, baggage=None)
    assert (status, route) == (200, "baseline"), baseline
    assert baseline["ok"] is True and baseline["error"] is None
    assert baseline["pod"] == CRASHING_POD
    assert "CrashLoopBackOff" in baseline["diagnosis"]
    assert "DATABASE_URL is not set" in baseline["diagnosis"]
    assert [e["tool"] for e in baseline["evidence"]] == ["list_pods", "describe_pod", "get_logs"]
    assert baseline["promptVersion"] == "v1"

    status, route, broken = traced(app, baggage=world.baggage["schema-change"])
    assert route == "baseline", "schema-change does not fork the agent"
    assert status == 502 and broken["ok"] is False, broken
    assert broken["diagnosis"] is None, "no diagnosis past a failed step"
    assert "no field 'lastState'" in broken["error"], broken["error"]
    # Only the fork's v2 schema has this field: the agent's MCP call reached the fork.
    assert "lastTermination" in broken["error"], broken["error"]
    assert broken["promptVersion"] == "v1" and broken["sandbox"] == "baseline"

    status, route, fixed = traced(app, baggage=world.baggage["fixed-agent"])
    assert (status, route) == (200, "sandbox=fixed-agent"), fixed
    assert fixed["ok"] is True and fixed["pod"] == CRASHING_POD
    assert "DATABASE_URL is not set" in fixed["diagnosis"]
    assert fixed["promptVersion"] == "v2" and fixed["sandbox"] == "fixed-agent"


def test_baseline_answer_unchanged_while_sandboxes_run(world: World) -> None:
    assert world.before["ok"] is True, world.before
    after = world.app.diagnose()
    assert after.headers["sandboxd-route"] == "baseline"
    assert stable(after.json()) == stable(world.before)


def test_each_sandboxs_tool_calls_stay_in_that_sandbox(world: World) -> None:
    app = world.app
    expected = {
        "schema-change": {
            ("agent", "baseline"),
            ("cluster-mcp", "sandbox=schema-change"),
            ("logs-mcp", "baseline"),
        },
        "fixed-agent": {
            ("agent", "sandbox=fixed-agent"),
            ("cluster-mcp", "sandbox=fixed-agent"),
            ("logs-mcp", "baseline"),
        },
    }
    for name, routes in expected.items():
        _, _, answer = traced(app, baggage=world.baggage[name])
        # The caller's request is logged by the router without a trace id only if it sent none.
        assert routes_of_trace(app, answer["traceId"]) == routes, name
    schema_change, fixed_agent = (app.get(n) for n in ("schema-change", "fixed-agent"))
    upstreams = {
        name: {f["service"]: f["upstream"] for f in sandbox["forks"]}
        for name, sandbox in (("schema-change", schema_change), ("fixed-agent", fixed_agent))
    }
    assert upstreams["schema-change"]["cluster-mcp"] != upstreams["fixed-agent"]["cluster-mcp"]
    assert set(fork_pids(sandbox="schema-change")).isdisjoint(fork_pids(sandbox="fixed-agent"))


async def describe_through_router(
    app: Troubleshooter, *, baggage: str | None
) -> tuple[dict[str, Any], set[str | None]]:
    """describe_pod of the crashing pod with the SDK client on cluster-mcp's router port:
    (its container status, the sandboxd-route of every HTTP exchange)."""
    routes: set[str | None] = set()

    async def on_response(response: httpx2.Response) -> None:
        routes.add(response.headers.get("sandboxd-route"))

    headers = {"baggage": baggage} if baggage else {}
    http = httpx2.AsyncClient(headers=headers, timeout=30, event_hooks={"response": [on_response]})
    async with http:
        transport = streamable_http_client(f"{app.url('cluster-mcp')}/mcp", http_client=http)
        async with Client(transport, mode="auto", read_timeout_seconds=30) as client:
            result = await client.call_tool(
                "describe_pod", {"namespace": "demo", "name": CRASHING_POD}
            )
    assert not result.is_error and result.structured_content is not None, result
    return dict(result.structured_content["containerStatuses"][0]), routes


@pytest.mark.parametrize(
    ("sandbox", "field", "route"),
    [
        (None, "lastState", "baseline"),
        ("schema-change", "lastTermination", "sandbox=schema-change"),
        ("fixed-agent", "lastTermination", "sandbox=fixed-agent"),
    ],
)
async def test_sdk_client_through_router_sees_its_sandboxs_schema(
    world: World, sandbox: str | None, field: str, route: str
) -> None:
    baggage = world.baggage[sandbox] if sandbox else None
    status, routes = await describe_through_router(world.app, baggage=baggage)
    assert field in status, status
    assert {"lastState", "lastTermination"} - {field} - set(status), status
    assert status[field]["terminated"]["exitCode"] == 1
    assert routes == {route}


async def test_ttl_expiry_removes_routes_and_processes(world: World) -> None:
    app = world.app
    spec = (
        "name: short-lived\nttl: 3s\nforks:\n"
        "  - service: cluster-mcp\n    env: {CLUSTER_MCP_SCHEMA: v2}\n"
    )
    created = app.up(spec)
    key, baggage = created["routingKey"], created["baggage"]
    assert fork_pids(sandbox="short-lived"), "the fork runs until the TTL ends"
    poll.until(lambda: key not in app.routes(), timeout=20, what="the route is removed")
    poll.until(lambda: not fork_pids(sandbox="short-lived"), timeout=20, what="the fork stops")
    status, routes = await describe_through_router(app, baggage=baggage)
    assert "lastState" in status and routes == {"baseline"}, "the key now reaches the baseline"
    assert app.get("short-lived")["phase"] == "Deleted"


def test_sandbox_down_leaves_no_process_behind(world: World, tmp_path: Path) -> None:
    app = world.app
    spec = tmp_path / "short-pr.yaml"
    text = (
        (SANDBOXES / "fixed-agent.yaml").read_text().replace("name: fixed-agent", "name: down-pr")
    )
    spec.write_text(text)
    key = app.up(spec)["routingKey"]
    assert len(fork_pids(sandbox="down-pr")) >= 2, "both forks run before `down`"
    result = app.cli("down", "down-pr", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert fork_pids(sandbox="down-pr") == []
    assert key not in app.routes()
    assert app.get("down-pr")["phase"] == "Deleted"
