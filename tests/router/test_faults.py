"""Faults the router answers itself, and latency, over plain HTTP through the real router.

The table gives pr-1 (which forks `echo`) and pr-3 (which forks nothing: the baseline serves it)
one fault per path; pr-2 has none. Each test checks what the client sees and, in the origin's
own record, whether the upstream was called.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.router.conftest import KEYS, Origin, Router, routes_table, start_router
from tests.support import poll
from tests.support.server import free_port

FAULTS: list[dict[str, Any]] = [
    {"id": "slow", "service": "echo", "kind": "latency", "path": "/lat/*", "latencyMs": 1500},
    {"id": "down", "service": "echo", "kind": "http_error", "path": "/err"},
    {"id": "boom", "service": "echo", "kind": "http_error", "path": "/err500", "status": 500},
    {"id": "post-only", "service": "echo", "kind": "http_error", "path": "/posted",
     "httpMethod": "POST", "status": 502},
    {"id": "limited", "service": "echo", "kind": "rate_limit", "path": "/limited",
     "retryAfter": 7},
    {"id": "hang", "service": "echo", "kind": "timeout", "path": "/timeout", "latencyMs": 1500},
    {"id": "rst", "service": "echo", "kind": "reset", "path": "/reset"},
    {"id": "first", "service": "echo", "kind": "latency", "path": "/multi", "latencyMs": 20},
    {"id": "second", "service": "echo", "kind": "latency", "path": "/multi", "latencyMs": 30},
    {"id": "then", "service": "echo", "kind": "rate_limit", "path": "/multi"},
    {"id": "never", "service": "echo", "kind": "http_error", "path": "/multi"},
    {"id": "every2", "service": "echo", "kind": "http_error", "path": "/nth", "nth": 2,
     "status": 500},
    {"id": "cut", "service": "echo", "kind": "malformed", "path": "/rewrite"},
    {"id": "emptied", "service": "echo", "kind": "empty_result", "path": "/empty"},
    {"id": "dropped", "service": "echo", "kind": "drop_fields", "path": "/drop",
     "fields": ["received.headers", "received.body.nope", "origin"]},
    {"id": "paced-big", "service": "echo", "kind": "slow_stream", "path": "/big",
     "httpMethod": "POST", "chunkDelayMs": 1},
    {"id": "too-big", "service": "echo", "kind": "empty_result", "path": "/big"},
    {"id": "not-json", "service": "echo", "kind": "empty_result", "path": "/chunked"},
    {"id": "failed", "service": "echo", "kind": "empty_result", "path": "/status"},
    {"id": "paced", "service": "echo", "kind": "slow_stream", "path": "/sse", "chunkDelayMs": 250},
    {"id": "now", "service": "echo", "kind": "rate_limit", "path": "/retry-now", "retryAfter": 0},
    {"id": "brief", "service": "echo", "kind": "latency", "path": "/brief", "latencyMs": 5},
    {"id": "brief-hang", "service": "echo", "kind": "timeout", "path": "/brief-timeout",
     "latencyMs": 5},
    {"id": "elsewhere", "service": "other", "kind": "http_error"},
]  # fmt: skip
PATHS = ["/lat/x", "/err", "/err500", "/limited", "/timeout", "/reset", "/multi", "/nth"]


def table(port: int, origins: dict[str, Origin], faults: list[dict[str, Any]]) -> dict[str, Any]:
    routes = routes_table(port, origins)
    routes["routes"][KEYS["pr-1"]]["faults"] = faults
    routes["routes"][KEYS["pr-3"]]["faults"] = faults
    return routes


@pytest.fixture(scope="module")
def router(
    origins: dict[str, Origin], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Router]:
    tmp = tmp_path_factory.mktemp("faults")
    r = start_router(tmp, table(free_port(), origins, FAULTS), "--upstream-timeout", "30")
    yield r
    r.proc.terminate()
    r.proc.wait()


def key(sandbox: str) -> dict[str, str]:
    return {"baggage": f"sandbox={KEYS[sandbox]}"}


def targets(origin: Origin) -> list[str]:
    return [str(r["target"]) for r in origin.seen()]


@pytest.fixture(autouse=True)
def forget(origins: dict[str, Origin]) -> None:
    for origin in origins.values():
        origin.forget()


@pytest.mark.parametrize(("sandbox", "served_by"), [("pr-1", "fork1"), ("pr-3", "baseline")])
@pytest.mark.parametrize(
    ("path", "status", "kind", "fault_id"),
    [
        ("/err", 503, "http_error", "down"),
        ("/err500", 500, "http_error", "boom"),
        ("/limited", 429, "rate_limit", "limited"),
    ],
)
def test_an_answered_fault_never_calls_the_upstream(
    router: Router,
    origins: dict[str, Origin],
    sandbox: str,
    served_by: str,
    path: str,
    status: int,
    kind: str,
    fault_id: str,
) -> None:
    with httpx.Client(base_url=router.url, headers=key(sandbox)) as client:
        response = client.get(path)
        after = client.get("/echo")  # the same keep-alive connection carries on
    assert response.status_code == status
    assert response.headers["sandboxd-fault"] == f"{kind}; id={fault_id}"
    assert response.json() == {
        "error": "injected_fault", "kind": kind, "sandbox": sandbox, "service": "echo"
    }  # fmt: skip
    if kind == "rate_limit":
        assert response.headers["retry-after"] == "7"
    assert after.status_code == 200 and "sandboxd-fault" not in after.headers
    assert after.json()["origin"] == served_by
    assert targets(origins[served_by]) == ["/echo"]  # the faulted request never arrived


def test_http_method_filters(router: Router, origins: dict[str, Origin]) -> None:
    got = httpx.get(f"{router.url}/posted", headers=key("pr-1"))
    posted = httpx.post(f"{router.url}/posted", headers=key("pr-1"), content=b"x" * 100_000)
    assert got.status_code == 200 and posted.status_code == 502
    assert targets(origins["fork1"]) == ["/posted"]


@pytest.mark.parametrize("headers", [{}, key("pr-2"), {"baggage": "sandbox=nobody"}])
def test_requests_without_the_key_are_untouched(
    router: Router, origins: dict[str, Origin], headers: dict[str, str]
) -> None:
    served_by = "fork2" if headers == key("pr-2") else "baseline"
    for path in PATHS:
        response = httpx.get(f"{router.url}{path}", headers=headers)
        assert response.status_code == 200, path
        assert "sandboxd-fault" not in response.headers
        assert response.json()["origin"] == served_by
    assert targets(origins[served_by]) == PATHS


def test_reset_is_a_real_connection_reset(router: Router, origins: dict[str, Origin]) -> None:
    request = f"GET /reset HTTP/1.1\r\nHost: x\r\nbaggage: sandbox={KEYS['pr-1']}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as s:
        s.sendall(request.encode())
        with pytest.raises(ConnectionResetError):
            s.recv(65536)
    assert targets(origins["fork1"]) == []


def test_timeout_answers_504_after_its_time(router: Router, origins: dict[str, Origin]) -> None:
    """Causality, not a clock: while the timeout holds its request, a request sent after it
    on another connection is answered; then comes the 504, and the upstream never saw it."""
    with sent(router, "/timeout") as s:
        later = httpx.get(f"{router.url}/echo", headers=key("pr-1"))
        assert later.status_code == 200 and nothing_yet(s)
        response = read_response(s)
    assert response.startswith(b"HTTP/1.1 504 ")
    assert b"sandboxd-fault: timeout; id=hang\r\n" in response
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["kind"] == "timeout"
    assert targets(origins["fork1"]) == ["/echo"]


def test_latency_delays_the_forward_then_answers_normally(
    router: Router, origins: dict[str, Origin]
) -> None:
    with sent(router, "/lat/x") as s:
        later = httpx.get(f"{router.url}/echo", headers=key("pr-1"))
        assert later.status_code == 200 and nothing_yet(s)
        assert targets(origins["fork1"]) == ["/echo"]  # not forwarded yet
        response = read_response(s)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert b"sandboxd-fault: latency; id=slow\r\n" in response
    assert b'"origin": "fork1"' in response
    assert targets(origins["fork1"]) == ["/echo", "/lat/x"]


@pytest.mark.parametrize(("path", "status"), [("/brief", 200), ("/brief-timeout", 504)])
def test_an_injected_wait_never_ends_before_its_time(
    router: Router, path: str, status: int
) -> None:
    """Causality: no response arrives sooner than `latencyMs` after its request was sent, as
    the client measures it. The event loop's timers are millisecond-grained and count from
    the loop's cached time, so a bare timer fired a fraction of a millisecond early now and
    then: hence the many repetitions."""
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nbaggage: sandbox={KEYS['pr-1']}\r\n\r\n"
    waited = []
    with socket.create_connection(("127.0.0.1", router.port), timeout=30) as s:
        for _ in range(300):
            sent_at = time.perf_counter()
            s.sendall(request.encode())
            response = read_response(s)
            waited.append(time.perf_counter() - sent_at)
            assert response.startswith(b"HTTP/1.1 %d " % status)
    early = [round(w * 1000, 2) for w in waited if w < 0.005]
    assert early == []


def test_latencies_add_up_then_the_first_other_fault_answers(
    router: Router, origins: dict[str, Origin]
) -> None:
    response = httpx.get(f"{router.url}/multi", headers=key("pr-1"))
    assert response.status_code == 429
    assert response.headers.get_list("sandboxd-fault") == [
        "latency; id=first", "latency; id=second", "rate_limit; id=then"
    ]  # fmt: skip
    assert targets(origins["fork1"]) == []
    assert '"fault":"latency; id=first, latency; id=second, rate_limit; id=then"' in (
        wait_for_log(router, "rate_limit; id=then")
    )


def test_nth_faults_every_second_request(router: Router) -> None:
    statuses = [httpx.get(f"{router.url}/nth", headers=key("pr-3")).status_code for _ in range(6)]
    assert statuses == [200, 500, 200, 500, 200, 500]


def test_a_retry_after_of_zero_is_sent_as_given(router: Router) -> None:
    limited = httpx.get(f"{router.url}/retry-now", headers=key("pr-1"))
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "0")
    assert httpx.get(f"{router.url}/limited", headers=key("pr-1")).headers["retry-after"] == "7"


@pytest.mark.parametrize(("sandbox", "served_by"), [("pr-1", "fork1"), ("pr-3", "baseline")])
def test_empty_result_and_drop_fields_rewrite_the_json_body(
    router: Router, origins: dict[str, Origin], sandbox: str, served_by: str
) -> None:
    with httpx.Client(base_url=router.url, headers=key(sandbox)) as client:
        emptied = client.get("/empty")
        dropped = client.get("/drop")
        after = client.get("/echo")  # the connection carries on: the lengths were right
    assert emptied.status_code == 200 and emptied.content == b"{}"
    assert emptied.headers["sandboxd-fault"] == "empty_result; id=emptied"
    assert emptied.headers["content-length"] == "2"
    assert dropped.headers["sandboxd-fault"] == "drop_fields; id=dropped"
    received = dropped.json()["received"]
    assert "origin" not in dropped.json() and "headers" not in received
    assert received["target"] == "/drop" and received["method"] == "GET"
    assert int(dropped.headers["content-length"]) == len(dropped.content)
    assert after.json()["origin"] == served_by and "sandboxd-fault" not in after.headers
    assert targets(origins[served_by]) == ["/empty", "/drop", "/echo"]  # it WAS called


def test_malformed_cuts_the_json_body(router: Router, origins: dict[str, Origin]) -> None:
    response = httpx.get(f"{router.url}/rewrite", headers=key("pr-1"))
    assert response.status_code == 200
    assert response.headers["sandboxd-fault"] == "malformed; id=cut"
    assert response.content.startswith(b'{"origin": "fork1", "received": {')  # cut short
    assert int(response.headers["content-length"]) == len(response.content)
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert targets(origins["fork1"]) == ["/rewrite"]


def test_slow_stream_holds_each_sse_event_apart(router: Router, origins: dict[str, Origin]) -> None:
    """The origin sends three events at once; the client gets them 250 ms apart (a lower
    bound, which the router's timer guarantees: no upper bound is asserted)."""
    arrivals: list[float] = []
    with httpx.stream("GET", f"{router.url}/sse?n=3&ms=0", headers=key("pr-1")) as response:
        assert response.headers["sandboxd-fault"] == "slow_stream; id=paced"
        events = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
                events.append(json.loads(line[6:])["i"])
    assert events == [0, 1, 2]
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(arrivals))
    assert targets(origins["fork1"]) == ["/sse?n=3&ms=0"]


def test_slow_stream_lets_a_large_body_out_whole(
    router: Router, origins: dict[str, Origin]
) -> None:
    """3 MB, more than the router holds back before it stops reading the upstream; the
    upstream connection it paused is read again (the next request, pooled on it, is answered)."""
    with httpx.Client(base_url=router.url, headers=key("pr-1"), timeout=10) as client:
        response = client.post("/big?bytes=3000000")
        after = client.get("/echo")
    assert response.headers["sandboxd-fault"] == "slow_stream; id=paced-big"
    assert response.content == b"x" * 3_000_000
    assert after.status_code == 200 and after.json()["origin"] == "fork1"
    assert targets(origins["fork1"]) == ["/big?bytes=3000000", "/echo"]


@pytest.mark.parametrize(
    ("path", "status"),
    [("/big?bytes=1100000", 200), ("/chunked?n=3", 200), ("/status?code=500", 500)],
)
def test_what_cannot_be_rewritten_passes_untouched(
    router: Router, origins: dict[str, Origin], path: str, status: int
) -> None:
    """Over the size limit (1 MiB), not JSON, or an error: the origin's answer as it came."""
    faulted = httpx.get(f"{router.url}{path}", headers=key("pr-1"))
    real = httpx.get(f"{router.url}{path}", headers=key("pr-2"))
    assert faulted.status_code == status and "sandboxd-fault" not in faulted.headers
    assert faulted.content == real.content
    assert targets(origins["fork1"]) == [path]


def test_the_access_log_names_the_fault(router: Router) -> None:
    httpx.get(f"{router.url}/err", headers=key("pr-1"))
    httpx.get(f"{router.url}/err", headers=key("pr-3"))
    line = json.loads(wait_for_log(router, "http_error; id=down", "sandbox=pr-1"))
    assert line["status"] == 503 and line["fault"] == "http_error; id=down"
    served = json.loads(wait_for_log(router, "http_error; id=down", '"route":"baseline"'))
    assert served["status"] == 503  # (pr-3's: served by the baseline, faulted all the same)
    httpx.get(f"{router.url}/empty", headers=key("pr-1"))
    emptied = json.loads(wait_for_log(router, "empty_result; id=emptied"))
    assert emptied["status"] == 200 and emptied["fault"] == "empty_result; id=emptied"


# helpers ---------------------------------------------------------------------------------
@contextmanager
def sent(router: Router, path: str) -> Iterator[socket.socket]:
    """A connection on which a GET of `path` with pr-1's key has been sent (and read: see
    `nothing_yet`), its response not read."""
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nbaggage: sandbox={KEYS['pr-1']}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", router.port), timeout=30) as s:
        s.sendall(request.encode())
        yield s


def nothing_yet(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return not s.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        s.setblocking(True)


def read_response(s: socket.socket) -> bytes:
    """One response with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(v for k, v in (ln.split(b": ", 1) for ln in head.split(b"\r\n")[1:])
                      if k.lower() == b"content-length"))  # fmt: skip
    while len(body) < length:
        body += s.recv(65536)
    return head + b"\r\n\r\n" + body


def wait_for_log(router: Router, *texts: str) -> str:
    def found() -> str | None:
        log = router.log.read_text() if router.log.exists() else ""
        lines = [line for line in log.splitlines() if all(t in line for t in texts)]
        return lines[-1] if lines else None

    line = poll.until(found, timeout=10)
    assert isinstance(line, str)
    return line


def test_a_head_request_gets_the_faults_head_only(router: Router) -> None:
    with httpx.Client(base_url=router.url, headers=key("pr-1")) as client:
        head = client.head("/err")
        after = client.get("/echo")  # nothing left over on the connection
    assert head.status_code == 503 and head.content == b""
    assert int(head.headers["content-length"]) > 0
    assert after.status_code == 200 and after.json()["origin"] == "fork1"
