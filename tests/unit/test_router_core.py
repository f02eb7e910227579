"""The router's pure parts: W3C baggage, header rules, MCP bodies, route tables, resolution."""

from __future__ import annotations

import json

import pytest

from sandboxd_router import headers as h
from sandboxd_router.baggage import MAX_BYTES, MAX_MEMBERS, find_key
from sandboxd_router.mcp import Sessions, key_from_body
from sandboxd_router.table import TableError, UpstreamRegistry, parse_table
from sandboxd_router.upstream import Upstream


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([b"sandbox=abc"], "abc"),
        ([b"a=1,sandbox=abc,b=2"], "abc"),
        ([b"a=1 ,\tsandbox = abc ; p=1;q , b=2"], "abc"),
        ([b"a=1", b"sandbox=abc"], "abc"),  # several headers form one list
        ([b"sandbox=a%62c"], "abc"),
        ([b"sandbox=a+c"], "a+c"),  # `+` is a literal plus in baggage
        ([b"sandboxx=abc"], None),
        ([b"xsandbox=abc"], None),
        ([b"other=sandbox=abc"], None),
        ([b"sandbox="], None),
        ([b"sandbox=%ff%fe"], None),  # not UTF-8 once decoded
        ([b",,,;;;==="], None),
        ([b""], None),
        ([], None),
    ],
)
def test_find_key(values: list[bytes], expected: str | None) -> None:
    assert find_key(values, b"sandbox") == expected


def test_find_key_honours_the_w3c_limits() -> None:
    within = b",".join(b"m%d=v" % i for i in range(MAX_MEMBERS - 1)) + b",sandbox=abc"
    assert find_key([within], b"sandbox") == "abc"
    beyond = b",".join(b"m%d=v" % i for i in range(MAX_MEMBERS)) + b",sandbox=abc"
    assert find_key([beyond], b"sandbox") is None
    assert find_key([b"m=" + b"v" * MAX_BYTES + b",sandbox=abc"], b"sandbox") is None
    split = [b",".join(b"m%d=v" % i for i in range(MAX_MEMBERS)), b"sandbox=abc"]
    assert find_key(split, b"sandbox") is None  # the limit spans headers


def test_request_head_drops_hop_by_hop_and_adds_forwarding() -> None:
    head = h.RequestHeaders()
    for name, value in [
        (b"Host", b"router:7311"), (b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1"),
        (b"TE", b"trailers"), (b"Content-Length", b"2"), (b"X-Forwarded-For", b"10.0.0.1"),
        (b"baggage", b"sandbox=k"), (b"X-Multi", b"a"), (b"X-Multi", b"b"),
    ]:  # fmt: skip
        head.add(name, value, name.lower())
    rendered = head.render(
        b"POST",
        b"/mcp?x=1",
        authority=b"127.0.0.1:7411",
        client=b"127.0.0.1",
        original_host=b"router:7311",
        framing=h.content_length(2),
    )
    lines = rendered.split(b"\r\n")
    assert lines[0] == b"POST /mcp?x=1 HTTP/1.1"
    assert lines[1] == b"Host: 127.0.0.1:7411"
    for gone in (b"Connection:", b"X-Hop:", b"TE:"):
        assert not any(line.startswith(gone) for line in lines)
    assert b"X-Multi: a\r\nX-Multi: b\r\n" in rendered
    assert b"baggage: sandbox=k\r\n" in rendered
    assert b"X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n" in rendered
    assert b"X-Forwarded-Host: router:7311\r\n" in rendered
    assert rendered.count(b"Content-Length:") == 1
    assert rendered.endswith(b"Content-Length: 2\r\n\r\n")


def response_headers(*pairs: tuple[bytes, bytes]) -> h.ResponseHeaders:
    head = h.ResponseHeaders()
    for name, value in pairs:
        head.add(name, value)
    return head


def test_response_head_reframes_or_passes_the_length() -> None:
    head = response_headers(
        (b"Content-Length", b"5"), (b"Set-Cookie", b"a=1"), (b"Keep-Alive", b"timeout=5"),
        (b"Connection", b"keep-alive, X-Private"), (b"X-Private", b"drop"),
        (b"Mcp-Session-Id", b"s1"), (b"X-Multi", b"a"), (b"X-Multi", b"b"),
    )  # fmt: skip
    assert (head.length, head.chunked, head.session) == (b"5", False, b"s1")
    passed = head.render(200, b"OK", route=b"baseline", framing=b"", close=False)
    assert b"Content-Length: 5\r\n" in passed and b"Keep-Alive" not in passed
    assert b"X-Private" not in passed and b"Connection" not in passed
    assert b"sandboxd-route: baseline\r\n" in passed and b"Set-Cookie: a=1\r\n" in passed
    assert b"X-Multi: a\r\nX-Multi: b\r\n" in passed
    chunked = head.render(200, b"OK", route=b"sandbox=pr-1", framing=h.CHUNKED, close=True)
    assert b"Content-Length" not in chunked and b"Transfer-Encoding: chunked\r\n" in chunked
    assert b"Connection: close\r\n" in chunked
    assert response_headers((b"Transfer-Encoding", b"gzip, chunked")).chunked
    assert h.chunk(b"hello") == b"5\r\nhello\r\n"


def test_key_from_an_mcp_body() -> None:
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "x", "_meta": {"baggage": "a=1,sandbox=k1"}}}  # fmt: skip
    assert key_from_body(json.dumps(call).encode(), b"sandbox") == "k1"
    batch = [{"jsonrpc": "2.0", "method": "notifications/initialized"}, call]
    assert key_from_body(json.dumps(batch).encode(), b"sandbox") == "k1"
    for body in (b"not json", b"[]", b'{"params": {"_meta": {"baggage": 7}}}', b'"str"'):
        assert key_from_body(body, b"sandbox") is None


def test_sessions_are_bounded_per_route_and_dropped_with_their_upstream() -> None:
    sessions = Sessions(limit=2, per_sandbox=2)
    a, b = Upstream("127.0.0.1", 1), Upstream("127.0.0.1", 2)
    sessions.remember(b"s1", a, b"baseline")
    for s in (b"s2", b"s3", b"s4"):
        sessions.remember(s, b, b"sandbox=pr-1")
    assert sessions.get(b"s2") is None and len(sessions) == 3  # the sandbox's own oldest went
    assert sessions.get(b"s1") is not None  # a sandbox never evicts the baseline's
    sessions.keep_only({id(a)})
    assert len(sessions) == 1 and sessions.get(b"s1") is not None


TABLE = {
    "baggageKey": "sandbox",
    "services": [
        {"name": "echo", "protocol": "mcp", "routerPort": 7301, "baseline": "http://127.0.0.1:7401"}
    ],
    "routes": {"k1": {"sandbox": "pr-1", "forks": {"echo": "http://127.0.0.1:9001"}, "faults": []}},
    "version": "v1",
}


def test_route_tables_parse_and_keep_upstreams_across_swaps() -> None:
    registry = UpstreamRegistry()
    first = parse_table(json.dumps(TABLE).encode(), upstreams=registry)
    assert first.by_port[7301].is_mcp and first.routes["k1"].decision == b"sandbox=pr-1"
    assert first.service_for_host(b"ECHO.example.com:80") is first.services["echo"]
    second = parse_table(json.dumps(TABLE).encode(), upstreams=registry)
    assert second.routes["k1"].forks["echo"] is first.routes["k1"].forks["echo"]  # same pool
    without = dict(TABLE, routes={})
    gone = registry.retain(parse_table(json.dumps(without).encode(), upstreams=registry))
    assert [u.port for u in gone] == [9001]


@pytest.mark.parametrize(
    "raw",
    [b"{", b"[]", b'{"services": [{"name": "x"}], "routes": {}}',
     json.dumps(dict(TABLE, services=[dict(TABLE["services"][0], baseline="https://x")])).encode()],
)  # fmt: skip
def test_a_malformed_table_is_refused(raw: bytes) -> None:
    with pytest.raises(TableError):
        parse_table(raw, upstreams=UpstreamRegistry())
