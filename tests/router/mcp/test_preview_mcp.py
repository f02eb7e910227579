"""The preview cookie on an `mcp` service (issue 15), through the official SDK client in every
connection mode: a live cookie routes like a key; a dead one gets the baseline and a clearing
`Set-Cookie` on each response (JSON-RPC answers, event streams, the session's DELETE), and the
MCP conversation goes on as without it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.router.mcp.conftest import KEYS, route
from tests.router.mcp.processes import Router, Upstream, mcp_service, sandboxd_router
from tests.router.mcp.sdk import MODES, Exchanges, connect, whoami

LIVE = "live" + "a" * 28  # pr-1's preview token
GONE = "gone" + "z" * 28  # a token no sandbox has (deleted, or never)


@pytest.fixture(scope="module")
def router(
    upstreams: dict[str, Upstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Router]:
    pr1 = route("pr-1", tools=upstreams["fork-pr-1"].root)
    pr1.update(preview=LIVE, expiresAt=int(time.time()) + 3600)
    routes = {
        "baggageKey": "sandbox",
        "services": [mcp_service("tools", baseline=upstreams["baseline"].root)],
        "routes": {KEYS["pr-1"]: pr1},
        "version": "preview-mcp",
    }
    with sandboxd_router(routes, log_dir=tmp_path_factory.mktemp("preview-mcp")) as running:
        yield running


def cleared(cookies: tuple[str, ...]) -> bool:
    return len(cookies) == 1 and cookies[0].startswith("sandboxd-preview=; Max-Age=0;")


@pytest.mark.parametrize("mode", MODES)
async def test_a_live_cookie_routes_the_session_to_the_fork(router: Router, mode: str) -> None:
    cookie = {"Cookie": f"sandboxd-preview={LIVE}"}
    async with connect(router.mcp_url("tools"), mode=mode, headers=cookie) as (client, seen):
        answer = await whoami(client)
    assert answer["instance"] == "fork-pr-1"
    assert answer["baggage"] == f"sandbox={KEYS['pr-1']}"  # the service can pass it on
    assert seen.routes == {"sandbox=pr-1"}
    assert [x.cookies for x in seen.items if x.cookies] == []


@pytest.mark.parametrize("mode", MODES)
async def test_a_dead_cookie_gets_the_baseline_and_is_cleared_on_every_response(
    router: Router, mode: str
) -> None:
    cookie = {"Cookie": f"theme=dark; sandboxd-preview={GONE}"}
    async with connect(router.mcp_url("tools"), mode=mode, headers=cookie) as (client, seen):
        first = await whoami(client)
        second = await whoami(client)
    assert first["instance"] == second["instance"] == "baseline"
    assert seen.routes == {"baseline"}
    assert_all_cleared(seen)


async def test_a_session_started_with_a_dead_cookie_keeps_its_route_not_the_clearing(
    router: Router,
) -> None:
    """Key and dead cookie only on `initialize` (sessions exist before the 2026-07-28
    revision): its answer clears the cookie; the session's later answers, routed by the
    session alone, carry its route and nothing of the cookie."""

    def on_initialize(method: str | None) -> dict[str, str]:
        if method != "initialize":
            return {}
        return {"baggage": f"sandbox={KEYS['pr-1']}", "Cookie": f"sandboxd-preview={GONE}"}

    url = router.mcp_url("tools")
    async with connect(url, mode="legacy", extra_headers=on_initialize) as (client, seen):
        answer = await whoami(client)
    assert answer["instance"] == "fork-pr-1" and answer["baggage"] is None
    assert seen.routes == {"sandbox=pr-1"}  # the session's route: one line
    assert {"GET", "DELETE"} <= seen.http_methods  # the event stream and the end, too
    by_cookie = [x for x in seen.items if x.cookies]
    assert [x.rpc_method for x in by_cookie] == ["initialize"] and cleared(by_cookie[0].cookies)


def assert_all_cleared(seen: Exchanges) -> None:
    assert seen.items, "the client made no HTTP exchange"
    assert {"POST"} <= seen.http_methods
    not_cleared = [x for x in seen.items if not cleared(x.cookies)]
    assert not_cleared == []
