"""Fuzzing the real router process with generated request heads and bodies, bounded in examples.

For every request: no 5xx made by the router (its own answers carry a JSON `error`), no
traceback in its log, and a request the router refused (any router-made answer) never reached
the upstream. The origin answers 200 to every path used here, so any other status is the
router's.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.router.conftest import KEYS, Origin, Router, routes_table, start_router
from tests.support.server import free_port

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))  # fmt: skip
TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~",
                min_size=1, max_size=12)  # fmt: skip
VALUE = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
WEIRD = st.sampled_from(
    [b"", b" ", b"\t", b"\r\n", b"\n", b"\x00", b"\xff", b",", b";", b"%", b"="]
)


@st.composite
def targets(draw: st.DrawFn) -> bytes:
    path = b"/f" + draw(st.binary(max_size=20)).replace(b" ", b"%20").replace(b"\r", b"")
    return draw(st.sampled_from([path, b"http://h" + path, b"HTTP://x:1" + path, b"*", path + b"?"
                                 + draw(VALUE), b"//f", b"http://", b"f", draw(st.binary(max_size=8))]))  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(
        st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"HEAD", b"G\x00T"])
    )
    version = draw(
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 x"])
    )
    headers: list[bytes] = [b"Host: " + draw(VALUE)] * draw(st.sampled_from([0, 1, 1, 1, 2]))
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.sampled_from([b"baggage", b"X-A", b"Mcp-Session-Id", b"Expect",
                                     b"Connection", b"Traceparent"]) | TOKEN.map(str.encode))  # fmt: skip
        value = draw(VALUE | st.just(f"sandbox={KEYS['pr-1']}".encode()) | WEIRD)
        headers.append(name + draw(st.sampled_from([b": ", b":", b" : "])) + value)
    body = draw(st.binary(max_size=300) | st.sampled_from([b"[" * 5000, b'{"params":{"_meta":'
                                                           b'{"baggage":"sandbox=\\ud800"}}}']))  # fmt: skip
    framing = draw(st.sampled_from(["length", "chunked", "none", "both"]))
    if framing in ("length", "both"):
        headers.append(b"Content-Length: %d" % len(body))
    if framing in ("chunked", "both"):
        headers.append(b"Transfer-Encoding: chunked")
        body = (b"%x\r\n%b\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    if framing == "none":
        body = b""
    headers.append(b"Connection: close")
    return b"%b %b %b\r\n%b\r\n\r\n%b" % (
        method,
        draw(targets()),
        version,
        b"\r\n".join(headers),
        body,
    )


@pytest.fixture(scope="module", params=["http", "mcp"])
def fuzzed(request: pytest.FixtureRequest, origins: dict[str, Origin],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:  # fmt: skip
    tmp = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    table = routes_table(free_port(), origins, protocol=request.param)
    r = start_router(tmp, table, "--head-timeout", "1", "--body-timeout", "1")
    yield r
    r.proc.terminate()
    r.proc.wait()


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer


@FUZZ
@given(data=requests())
def test_generated_requests_never_get_a_router_5xx_nor_reach_the_upstream_when_refused(
    fuzzed: Router, origins: dict[str, Origin], data: bytes
) -> None:
    for origin in origins.values():
        origin.forget()
    answer = exchange(fuzzed.port, data)
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    assert status, (data[:300], answer[:300])
    assert b"\r\nsandboxd-route: " in head
    if status != 200 or b"sandboxd-route: sandbox=dead" in head:  # (a dead fork is a real 502)
        assert status < 500 or b"sandbox=dead" in head, (data[:300], answer[:300])
        if status >= 400:
            assert json.loads(body)["error"]
    if 400 <= status < 500:
        assert all(o.seen() == [] for o in origins.values()), data[:300]
    assert "Traceback" not in (fuzzed.log.parent / "router.err").read_text()


MESSAGE = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "id": st.integers() | st.text(max_size=5), "method": st.text(max_size=12),
     "params": st.fixed_dictionaries({"_meta": st.fixed_dictionaries(
         {"baggage": st.text(max_size=40) | st.just(f"sandbox={KEYS['pr-1']}")})})}
)  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip
MCP_BODIES = st.one_of(
    MESSAGE.map(lambda m: json.dumps(m).encode()),
    st.lists(MESSAGE | JSON, max_size=4).map(lambda batch: json.dumps(batch).encode()),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * (n % 3)),
    st.integers(1, 50_000).map(lambda n: b'{"params":' * n + b"{}"),
    st.integers(4000, 20_000).map(lambda n: b'{"id": ' + b"9" * n + b"}"),
    st.tuples(MESSAGE, st.binary(min_size=1, max_size=4)).map(
        lambda mb: json.dumps(mb[0]).encode().replace(b'"2.0"', b'"2.0' + mb[1] + b'"')),
    st.binary(max_size=2000),
)  # fmt: skip


@pytest.fixture(scope="module")
def mcp_router(
    origins: dict[str, Origin], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Router]:
    tmp = tmp_path_factory.mktemp("fuzz-mcp-bodies")
    r = start_router(tmp, routes_table(free_port(), origins, protocol="mcp"))
    yield r
    r.proc.terminate()
    r.proc.wait()


@FUZZ
@given(body=MCP_BODIES)
def test_generated_mcp_bodies_are_routed_never_a_5xx(mcp_router: Router, body: bytes) -> None:
    head = (b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))  # fmt: skip
    answer = exchange(mcp_router.port, head + body)
    assert answer.startswith(b"HTTP/1.1 200 "), (body[:200], answer[:300])
    route = answer.partition(b"\r\nsandboxd-route: ")[2].partition(b"\r\n")[0]
    assert route in (b"baseline", b"sandbox=pr-1")
    assert "Traceback" not in (mcp_router.log.parent / "router.err").read_text()
