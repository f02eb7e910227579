"""`routing.route` and `routing.route_by_body`, called directly: every rule of DESIGN §6 as the
router applies it, from the table, the sessions and a request's routing inputs alone."""

from __future__ import annotations

import json

from sandboxd_router import routing
from sandboxd_router.mcp import Sessions
from sandboxd_router.routing import FORWARD, HOLD, UNKNOWN, Decision
from sandboxd_router.table import Table, UpstreamRegistry, parse_table

TABLE = {
    "baggageKey": "sandbox",
    "services": [
        {"name": "api", "routerPort": 7301, "baseline": "http://127.0.0.1:7401"},
        {
            "name": "tools",
            "protocol": "mcp",
            "routerPort": 7302,
            "baseline": "http://127.0.0.1:7402",
        },
    ],
    "routes": {
        "k-api": {"sandbox": "pr-1", "forks": {"api": "http://127.0.0.1:9001"}},
        "k-tools": {"sandbox": "pr-2", "forks": {"tools": "http://127.0.0.1:9002"}},
    },
    "version": "v1",
}


def table(**changes: object) -> Table:
    return parse_table(json.dumps(dict(TABLE, **changes)).encode(), upstreams=UpstreamRegistry())


def route(
    t: Table,
    *,
    port: int | None = 7301,
    host: bytes | None = b"x",
    method: bytes = b"GET",
    baggage: list[bytes] | None = None,
    session: bytes | None = None,
    has_body: bool = False,
    sessions: Sessions | None = None,
) -> Decision:
    return routing.route(
        t,
        sessions or Sessions(),
        port=port,
        host=host,
        method=method,
        baggage=baggage or [],
        session=session,
        has_body=has_body,
    )


def to_fork(decision: Decision, t: Table, key: str, service: str) -> bool:
    entry = t.routes[key]
    return (
        decision.action == FORWARD
        and decision.service is t.services[service]
        and decision.upstream is entry.forks[service]
        and decision.label == entry.decision
        and decision.sandbox == entry.sandbox
        and decision.route is entry
    )


def to_baseline(decision: Decision, t: Table, service: str) -> bool:
    return (
        decision.action == FORWARD
        and decision.service is t.services[service]
        and decision.upstream is t.services[service].baseline
        and decision.label == b"baseline"
        and decision.sandbox is None
    )


def test_the_baggage_key_of_a_sandbox_that_forks_the_service_goes_to_the_fork() -> None:
    t = table()
    assert to_fork(route(t, baggage=[b"a=1,sandbox=k-api"]), t, "k-api", "api")
    assert to_fork(route(t, baggage=[b"a=1", b"sandbox=k-api;p"]), t, "k-api", "api")


def test_no_key_goes_to_the_baseline() -> None:
    t = table()
    for baggage in ([], [b"other=k-api"], [b"sandbox="]):
        decision = route(t, baggage=baggage)
        assert to_baseline(decision, t, "api") and decision.route is None


def test_an_unknown_key_goes_to_the_baseline() -> None:
    t = table()
    decision = route(t, baggage=[b"sandbox=nobody"])
    assert to_baseline(decision, t, "api") and decision.route is None


def test_a_sandbox_that_does_not_fork_the_service_is_served_by_the_baseline() -> None:
    """…and the decision still names the sandbox's table entry: its faults apply there too."""
    t = table()
    decision = route(t, baggage=[b"sandbox=k-tools"])  # pr-2 forks tools, not api
    assert to_baseline(decision, t, "api") and decision.route is t.routes["k-tools"]


def test_the_tables_own_key_name_is_read() -> None:
    t = table(baggageKey="env")
    assert to_fork(route(t, baggage=[b"env=k-api"]), t, "k-api", "api")
    assert to_baseline(route(t, baggage=[b"sandbox=k-api"]), t, "api")


def test_an_mcp_session_seen_starting_stays_where_it_started() -> None:
    t = table()
    sessions = Sessions()
    fork = t.routes["k-tools"].forks["tools"]
    sessions.remember(b"s-1", fork, b"sandbox=pr-2")
    decision = route(t, port=7302, session=b"s-1", sessions=sessions, baggage=[b"sandbox=x"])
    assert decision.action == FORWARD and decision.upstream is fork  # before the baggage
    assert decision.label == b"sandbox=pr-2" and decision.sandbox == "pr-2"
    assert decision.service is t.services["tools"]


def test_an_unknown_mcp_session_is_routed_by_the_other_rules() -> None:
    t = table()
    decision = route(t, port=7302, session=b"s-unknown", baggage=[b"sandbox=k-tools"])
    assert to_fork(decision, t, "k-tools", "tools")


def test_a_session_header_on_a_plain_http_service_is_not_a_session() -> None:
    t = table()
    sessions = Sessions()
    sessions.remember(b"s-1", t.routes["k-api"].forks["api"], b"sandbox=pr-1")
    assert to_baseline(route(t, session=b"s-1", sessions=sessions), t, "api")


def test_an_mcp_post_without_a_baggage_key_is_held_for_its_body() -> None:
    t = table()
    held = route(t, port=7302, method=b"POST", has_body=True)
    assert held.action == HOLD and held.service is t.services["tools"] and held.upstream is None


def test_only_an_mcp_post_with_a_body_and_no_key_is_held() -> None:
    t = table()
    assert to_baseline(route(t, port=7302, method=b"POST", has_body=False), t, "tools")
    assert to_baseline(route(t, port=7302, method=b"GET", has_body=True), t, "tools")
    assert to_baseline(route(t, port=7301, method=b"POST", has_body=True), t, "api")  # http
    keyed = route(t, port=7302, method=b"POST", has_body=True, baggage=[b"sandbox=k-tools"])
    assert to_fork(keyed, t, "k-tools", "tools")


def test_a_held_body_routes_by_params_meta_baggage() -> None:
    t = table()
    service = t.services["tools"]
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "x", "_meta": {"baggage": "a=1,sandbox=k-tools"}}}  # fmt: skip
    body = json.dumps(call).encode()
    assert to_fork(routing.route_by_body(t, service, body), t, "k-tools", "tools")
    batch = json.dumps([{"jsonrpc": "2.0", "method": "ping"}, call]).encode()
    assert to_fork(routing.route_by_body(t, service, batch), t, "k-tools", "tools")


def test_a_body_without_a_key_or_not_read_goes_to_the_baseline() -> None:
    t = table()
    service = t.services["tools"]
    for body in (None, b"{not json", b'{"params": {"_meta": {"baggage": "sandbox=nobody"}}}'):
        assert to_baseline(routing.route_by_body(t, service, body), t, "tools")


def test_a_port_no_service_listens_on_is_unknown() -> None:
    decision = route(table(), port=7399)
    assert decision.action == UNKNOWN and decision.service is None and decision.upstream is None


def test_gateway_mode_picks_the_service_by_the_hosts_first_label() -> None:
    t = table()
    by_host = route(t, port=None, host=b"TOOLS.sbx.example:8080", baggage=[b"sandbox=k-tools"])
    assert to_fork(by_host, t, "k-tools", "tools")
    assert route(t, port=None, host=b"nothing.example").action == UNKNOWN
    assert route(t, port=None, host=None).action == UNKNOWN


def test_requests_routed_alike_share_one_decision_until_the_table_changes() -> None:
    t = table()
    first = route(t, baggage=[b"sandbox=k-api"])
    assert route(t, baggage=[b"b=2,sandbox=k-api"]) is first
    assert route(t) is route(t)
    moved = dict(TABLE["routes"], **{"k-api": {"sandbox": "pr-9", "forks": {"api": "http://h:1"}}})
    t2 = table(routes=moved)
    again = route(t2, baggage=[b"sandbox=k-api"])
    assert again.label == b"sandbox=pr-9" and again.upstream is t2.routes["k-api"].forks["api"]


def test_keys_that_route_nowhere_are_not_remembered() -> None:
    t = table()
    for i in range(100):
        route(t, baggage=[b"sandbox=random-%d" % i])
    assert set(t.decided) == {None}
