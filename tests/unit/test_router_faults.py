"""The fault engine (`sandboxd_router.faults`): matching, schedules, composition, counters."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sandboxd_router import routing
from sandboxd_router.faults import FaultBook, Rpc, ServiceFaults, rpc_of
from sandboxd_router.mcp import Sessions
from sandboxd_router.table import TableError, UpstreamRegistry, parse_table


def compiled(*faults: dict[str, Any], sandbox: str = "pr-1") -> ServiceFaults:
    by_service = FaultBook().compile(sandbox, faults)
    return by_service["svc"]


def fault(kind: str = "http_error", **fields: Any) -> dict[str, Any]:
    return {"id": fields.pop("id", kind), "service": "svc", "kind": kind, **fields}


Request = tuple[bytes, bytes, Rpc | None, bool]


def http(method: str = "GET", target: str = "/api/items?x=1") -> Request:
    return method.encode(), target.encode(), None, True


def call(tool: str, *, rpc_id: int | None = 1, method: str = "tools/call") -> Request:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": {"name": tool}}
    if rpc_id is not None:
        message["id"] = rpc_id
    return b"POST", b"/mcp", rpc_of(json.dumps(message).encode()), True


def choose(faults: ServiceFaults, request: Request) -> Any:
    http_method, target, rpc, read = request
    return faults.choose(http_method, target, rpc, read=read)


def fired(faults: ServiceFaults, requests: list[Request]) -> list[bool]:
    return [choose(faults, r) is not None for r in requests]


def test_path_and_http_method_filter_http_requests() -> None:
    faults = compiled(fault(path="/api/*", httpMethod="post"))
    assert choose(faults, http("GET")) is None
    assert choose(faults, http("POST", "/other")) is None
    verdict = choose(faults, http("POST", "/api/items?q=1"))  # the query is not the path
    assert verdict is not None and verdict.answer is not None
    assert verdict.answer.kind == "http_error"


def test_tool_globs_match_tools_call_only_by_default() -> None:
    faults = compiled(fault("tool_error", tool="describe_*"))
    assert choose(faults, call("describe_pod")) is not None
    assert choose(faults, call("list_pods")) is None
    assert choose(faults, call("describe_pod", method="resources/read")) is None
    assert choose(faults, http("POST", "/mcp")) is None  # no JSON-RPC message at all


def test_method_glob_and_any_method_without_filters() -> None:
    by_method = compiled(fault("jsonrpc_error", method="tools/*"))
    assert choose(by_method, call("x", method="tools/list")) is not None
    assert choose(by_method, call("x", method="initialize")) is None
    unfiltered = compiled(fault("http_error"))
    assert choose(unfiltered, call("x", method="initialize")) is not None
    assert choose(unfiltered, http()) is not None


def test_jsonrpc_kinds_skip_notifications() -> None:
    faults = compiled(fault("jsonrpc_error"))
    assert choose(faults, call("x", rpc_id=None, method="notifications/initialized")) is None
    assert choose(faults, call("x", rpc_id=7)) is not None


def test_a_body_not_read_matches_no_body_filter_and_is_counted() -> None:
    faults = compiled(fault("tool_error", tool="*"))
    assert choose(faults, (b"POST", b"/mcp", None, False)) is None
    assert faults.faults[0].unread == 1 and faults.faults[0].matched == 0


def test_after_skips_then_nth_then_times_stops() -> None:
    faults = compiled(fault(after=2, nth=3, times=2))
    pattern = fired(faults, [http() for _ in range(14)])
    # skip 2; of the rest every 3rd (ranks 3, 6, 9, …); at most twice
    assert [i + 1 for i, hit in enumerate(pattern) if hit] == [5, 8]
    only = faults.faults[0]
    assert (only.matched, only.injected) == (14, 2)


def test_a_seeded_probability_gives_the_same_sequence_twice() -> None:
    runs = [fired(compiled(fault(probability=0.5, seed=42)), [http()] * 64) for _ in range(2)]
    assert runs[0] == runs[1]
    assert 0 < sum(runs[0]) < 64  # (a coin, not a constant)
    other = fired(compiled(fault(probability=0.5, seed=7)), [http()] * 64)
    assert other != runs[0]


def test_probability_zero_never_fires_but_counts() -> None:
    faults = compiled(fault(probability=0.0))
    assert fired(faults, [http()] * 5) == [False] * 5
    assert faults.faults[0].matched == 5 and faults.faults[0].injected == 0


def test_latencies_add_up_then_the_first_other_kind_applies() -> None:
    faults = compiled(
        fault("latency", id="a", latencyMs=100),
        fault("http_error", id="first", status=500),
        fault("latency", id="b", latencyMs=50),  # after the answer: not consulted
        fault("rate_limit", id="second"),
    )
    verdict = choose(faults, http())
    assert verdict is not None and verdict.answer is not None
    assert verdict.answer.id == "first" and verdict.latency_ms == 100
    assert [f.id for f in verdict.applied()] == ["a", "first"]
    assert verdict.headers() == (
        b"sandboxd-fault: latency; id=a\r\nsandboxd-fault: http_error; id=first\r\n"
    )
    assert [f.matched for f in faults.faults] == [1, 1, 0, 0]


def test_a_fault_that_does_not_fire_leaves_the_next_one_its_turn() -> None:
    faults = compiled(
        fault("latency", id="l1", latencyMs=10),
        fault("latency", id="l2", latencyMs=20),
        fault("http_error", id="skip", after=1),
        fault("timeout", id="then"),
    )
    verdict = choose(faults, http())
    assert verdict is not None and verdict.answer is not None
    assert verdict.answer.id == "then" and verdict.latency_ms == 30
    again = choose(faults, http())
    assert again is not None and again.answer is not None and again.answer.id == "skip"


def test_a_rewriting_kind_applies_after_latency_and_ends_the_list() -> None:
    faults = compiled(
        fault("latency", id="d", latencyMs=5), fault("drop_fields", fields=["a"]), fault()
    )
    verdict = choose(faults, http())
    assert verdict.answer is None and verdict.rewrite is faults.faults[1]
    assert (
        verdict.latency_ms == 5 and verdict.names() == "latency; id=d, drop_fields; id=drop_fields"
    )
    assert [f.matched for f in faults.faults] == [1, 1, 0]


def test_a_request_only_a_rewriting_kind_matches_is_no_remembered_miss() -> None:
    faults = compiled(fault("empty_result", path="/a", nth=2))
    assert fired(faults, [http("GET", "/a")] * 4) == [False, True, False, True]
    assert faults.faults[0].matched == 4


def test_hide_tool_matches_tools_list_by_method_not_by_its_tool() -> None:
    faults = compiled(fault("hide_tool", tool="secret_*"))
    hide = faults.faults[0]
    assert choose(faults, call("anything", method="tools/list")).rewrite is hide
    assert choose(faults, call("secret_x")) is None  # a tools/call of a hidden tool
    assert hide.hidden is not None and hide.hidden.fullmatch("secret_x")


def table(*faults: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "services": [{"name": "svc", "baseline": "http://127.0.0.1:1"}],
            "routes": {
                "k1": {"sandbox": "pr-1", "forks": {}, "faults": list(faults)},
                "k2": {"sandbox": "pr-2", "forks": {}, "faults": [fault("reset", id="r")]},
            },
        }
    ).encode()


def test_counters_survive_a_table_swap_that_keeps_the_fault_id() -> None:
    book, upstreams = FaultBook(), UpstreamRegistry()
    first = parse_table(table(fault(id="f", nth=2)), upstreams=upstreams, faults=book)
    svc = first.routes["k1"].by_service["svc"]
    fired(svc, [http()] * 3)
    changed = fault(id="f", nth=2, status=500)  # same id, new spec: counters kept
    second = parse_table(table(changed), upstreams=upstreams, faults=book)
    kept = second.routes["k1"].by_service["svc"].faults[0]
    assert (kept.matched, kept.injected, kept.status) == (3, 1, 500)
    assert sorted(book.snapshot()) == [("pr-1", "f", 3, 1), ("pr-2", "r", 0, 0)]
    assert sorted(book.entries()) == [
        ("pr-1", "k1", "f", 3, 1, 0, 0),
        ("pr-2", "k2", "r", 0, 0, 0, 0),
    ]
    third = parse_table(table(fault(id="g")), upstreams=upstreams, faults=book)
    assert third.routes["k1"].by_service["svc"].faults[0].matched == 0
    assert ("pr-1", "f", 3, 1) not in book.snapshot()  # gone with its table


def test_an_unchanged_fault_keeps_its_schedule_across_swaps() -> None:
    book, upstreams = FaultBook(), UpstreamRegistry()
    spec = fault(id="p", probability=0.5, seed=3)
    whole = fired(compiled(spec), [http()] * 20)
    first = parse_table(table(spec), upstreams=upstreams, faults=book)
    part = fired(first.routes["k1"].by_service["svc"], [http()] * 10)
    second = parse_table(table(spec), upstreams=upstreams, faults=book)
    part += fired(second.routes["k1"].by_service["svc"], [http()] * 10)
    assert part == whole


def test_only_a_drawing_fault_holds_a_generator_and_like_globs_are_shared() -> None:
    """A table holds thousands of faults: a random generator (2.5 KB) only where `probability`
    is drawn, and one compiled pattern per distinct glob."""
    faults = compiled(
        fault(id="a", path="/api/*"),
        fault(id="b", path="/api/*", probability=0.5),
        fault("latency", id="c", probability=1, seed=4),
        fault(id="d", path="/api/*", probability=0.0, seed=4),
    ).faults
    assert [f.rng is None for f in faults] == [True, False, True, False]
    assert faults[0].path is not None and faults[0].path is faults[1].path is faults[3].path


def test_sandboxes_with_the_same_fault_share_one_copy_of_its_wire_form() -> None:
    book = FaultBook()
    book.begin()
    first, same, other = (
        book.compile(sandbox, [fault(id="x", path=path)])["svc"].faults[0]
        for sandbox, path in (("pr-1", "/a/*"), ("pr-2", "/a/*"), ("pr-3", "/b"))
    )
    book.commit()
    assert first.raw is same.raw and other.raw is not first.raw
    assert other.path is not None and other.path.fullmatch(b"/b") is not None


def test_decisions_carry_the_keys_faults_forked_or_not_and_through_a_session() -> None:
    raw = {
        "services": [
            {"name": "svc", "protocol": "mcp", "routerPort": 7001, "baseline": "http://b:1"},
            {"name": "web", "routerPort": 7002, "baseline": "http://b:2"},
        ],
        "routes": {
            "k1": {"sandbox": "pr-1", "forks": {"svc": "http://f:1"}, "faults": [fault()]},
            "k2": {"sandbox": "pr-2", "forks": {}, "faults": [fault()]},
        },
    }
    t = parse_table(json.dumps(raw).encode(), upstreams=UpstreamRegistry())
    sessions = Sessions()

    def route(port: int, baggage: bytes | None, session: bytes | None = None) -> Any:
        return routing.route(
            t, sessions, port=port, host=b"x", method=b"GET", baggage=[baggage] if baggage else [],
            session=session, has_body=False,
        )  # fmt: skip

    forked, served = route(7001, b"sandbox=k1"), route(7001, b"sandbox=k2")
    assert forked.faults is t.routes["k1"].by_service["svc"]
    assert served.label == b"baseline" and served.faults is t.routes["k2"].by_service["svc"]
    assert route(7002, b"sandbox=k1").faults is None  # no fault on that service
    assert route(7001, None).faults is None and route(7001, b"sandbox=nobody").faults is None
    assert served.upstream is not None
    sessions.remember(b"s-1", served.upstream, served.label, "pr-2")
    assert route(7001, None, b"s-1").faults is t.routes["k2"].by_service["svc"]


def test_a_remembered_miss_never_hides_a_match() -> None:
    faults = compiled(fault(path="/a", nth=2), fault("latency", id="d", httpMethod="DELETE"))
    assert fired(faults, [http("GET", "/b")] * 3) == [False] * 3  # remembered as a miss
    assert fired(faults, [http("GET", "/a")] * 4) == [False, True, False, True]
    assert fired(faults, [http("DELETE", "/b")]) == [True]  # same target, another method
    assert [f.matched for f in faults.faults] == [4, 1]


def revised(faults_k1: list[dict[str, Any]], rev_k1: str, rev_k2: str = "r2") -> bytes:
    """A table whose entries carry the control plane's `rev`."""
    routes = json.loads(table(*faults_k1))
    routes["routes"]["k1"]["rev"] = rev_k1
    routes["routes"]["k2"]["rev"] = rev_k2
    return json.dumps(routes).encode()


def test_an_entry_whose_rev_is_unchanged_is_the_same_route() -> None:
    book, upstreams = FaultBook(), UpstreamRegistry()
    first = parse_table(revised([fault(id="f")], "a1"), upstreams=upstreams, faults=book)
    fired(first.routes["k1"].by_service["svc"], [http()] * 2)
    same = parse_table(
        revised([fault(id="f")], "a1"), upstreams=upstreams, faults=book, previous=first
    )
    assert same.routes["k1"] is first.routes["k1"] and same.routes["k2"] is first.routes["k2"]
    assert sorted(book.entries()) == [  # the kept routes' faults are still reported
        ("pr-1", "k1", "f", 2, 2, 0, 0),
        ("pr-2", "k2", "r", 0, 0, 0, 0),
    ]
    changed = parse_table(
        revised([fault(id="f", status=500)], "a2"), upstreams=upstreams, faults=book, previous=same
    )
    route = changed.routes["k1"]
    assert route is not same.routes["k1"] and route.rev == "a2"
    assert (
        route.by_service["svc"].faults[0].status,
        route.by_service["svc"].faults[0].matched,
    ) == (
        500,
        2,
    )
    assert changed.routes["k2"] is first.routes["k2"]
    unrevised = parse_table(
        table(fault(id="f")), upstreams=upstreams, faults=book, previous=changed
    )
    assert unrevised.routes["k1"] is not route  # no rev (an older control plane): built anew


def test_a_delta_applies_to_the_table_held_and_only_to_it() -> None:
    book, upstreams = FaultBook(), UpstreamRegistry()
    first = parse_table(revised([fault(id="f")], "a1"), upstreams=upstreams, faults=book)
    first = parse_table(  # (a version, as the control plane gives every table)
        json.dumps({**json.loads(revised([fault(id="f")], "a1")), "version": "v1"}).encode(),
        upstreams=upstreams, faults=book, previous=first,
    )  # fmt: skip
    fired(first.routes["k2"].by_service["svc"], [http()] * 3)
    services = [{"name": "svc", "baseline": "http://127.0.0.1:1"}]
    added = {"sandbox": "pr-3", "forks": {}, "faults": [fault(id="n")], "rev": "c1"}
    delta = {"services": services, "base": "v1", "removed": ["k1"], "routes": {"k3": added},
             "version": "v2"}  # fmt: skip
    second = parse_table(
        json.dumps(delta).encode(), upstreams=upstreams, faults=book, previous=first
    )
    assert set(second.routes) == {"k2", "k3"} and second.version == "v2"
    assert second.routes["k2"] is first.routes["k2"]  # untouched: the very route, and its counts
    assert sorted(book.entries()) == [
        ("pr-2", "k2", "r", 3, 3, 0, 0),
        ("pr-3", "k3", "n", 0, 0, 0, 0),
    ]
    assert second.by_sandbox.keys() == {"pr-2", "pr-3"}
    with pytest.raises(TableError, match="does not apply"):
        parse_table(json.dumps(delta).encode(), upstreams=upstreams, faults=book, previous=second)
    with pytest.raises(TableError, match="does not apply"):
        parse_table(json.dumps(delta).encode(), upstreams=upstreams, faults=book)
