"""Faithful proxying: streams, framing, headers, connections — checked at the origin."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
import time
from pathlib import Path

import httpx

from tests.router.conftest import KEYS, Origin, Router, raw
from tests.support import poll


def test_sse_events_arrive_as_they_are_sent_not_batched(router: Router) -> None:
    arrivals = []
    with httpx.stream("GET", f"{router.url}/sse?n=5&ms=200", timeout=10) as response:
        assert response.headers["content-type"] == "text/event-stream"
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.time(), json.loads(line[6:])["sent"]))
    assert len(arrivals) == 5
    # Causal, not timed: each event reached the client before the origin wrote the next one,
    # so none was held back to be sent with a later one (the origin waits 200 ms in between).
    for (arrived, _), (_, next_sent) in itertools.pairwise(arrivals):
        assert arrived < next_sent, arrivals


def test_chunked_responses_and_close_delimited_bodies_pass_whole(router: Router) -> None:
    assert httpx.get(f"{router.url}/chunked?n=4").text == "part-0;part-1;part-2;part-3;"
    closed = httpx.get(f"{router.url}/close")
    assert closed.text == "until-close" and closed.headers["sandboxd-route"] == "baseline"


def test_large_bodies_both_ways(router: Router) -> None:
    payload = os.urandom(8 * 1024 * 1024)
    uploaded = httpx.post(f"{router.url}/upload", content=payload, timeout=30).json()
    assert uploaded == {"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}

    def chunks():  # a chunked upload (no Content-Length)
        for i in range(0, len(payload), 100_000):
            yield payload[i : i + 100_000]

    streamed = httpx.post(f"{router.url}/upload", content=chunks(), timeout=30).json()
    assert streamed["sha256"] == hashlib.sha256(payload).hexdigest()
    big = httpx.get(f"{router.url}/big?bytes=20000000", timeout=30)
    assert len(big.content) == 20_000_000 and big.headers["content-length"] == "20000000"


def test_headers_hop_by_hop_stripped_repeated_kept_forwarding_added(
    router: Router, origins: dict[str, Origin]
) -> None:
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    response = httpx.get(
        f"{router.url}/echo",
        headers=[
            ("Connection", "keep-alive, X-Secret-Hop"), ("X-Secret-Hop", "drop me"),
            ("Keep-Alive", "timeout=5"), ("TE", "trailers"), ("Proxy-Authorization", "Basic x"),
            ("X-Multi", "a"), ("X-Multi", "b"), ("traceparent", trace), ("tracestate", "k=v,k2=v2"),
            ("X-Forwarded-For", "10.1.2.3"), ("Cookie", "a=1; b=2"),
        ],
    )  # fmt: skip
    assert response.status_code == 200, (response.headers, response.text)  # not the origin's?
    received = response.json()["received"]["headers"]
    names = [k.lower() for k, _ in received]
    for hop in ("connection", "x-secret-hop", "keep-alive", "te", "proxy-authorization"):
        assert hop not in names
    assert [v for k, v in received if k == "X-Multi"] == ["a", "b"]
    got = {k.lower(): v for k, v in received}
    assert got["traceparent"] == trace and got["tracestate"] == "k=v,k2=v2"
    assert got["host"] == f"127.0.0.1:{origins['baseline'].port}"  # Host is the upstream's
    assert got["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert got["x-forwarded-proto"] == "http"
    assert got["x-forwarded-host"] == f"127.0.0.1:{router.port}"
    assert got["cookie"] == "a=1; b=2"
    assert response.headers.get_list("x-repeated") == ["one", "two"]


def test_redirects_are_not_followed_and_statuses_pass_verbatim(router: Router) -> None:
    for code in (301, 302, 404, 405, 421, 500, 503):
        assert httpx.get(f"{router.url}/status?code={code}").status_code == code


def test_a_set_cookie_never_reaches_another_client(router: Router) -> None:
    first = httpx.get(f"{router.url}/cookie", headers={"baggage": f"sandbox={KEYS['pr-1']}"})
    assert first.headers["set-cookie"] == "session=fork1; Path=/"
    second = httpx.get(f"{router.url}/echo")  # a new client, no cookie jar shared
    assert "cookie" not in {k.lower() for k, _ in second.json()["received"]["headers"]}


def test_upstream_connections_are_pooled_and_kept_alive(
    router: Router, origins: dict[str, Origin]
) -> None:
    origins["baseline"].forget()
    with httpx.Client() as client:
        for _ in range(5):
            client.get(f"{router.url}/echo")
    seen = origins["baseline"].seen()
    assert max(r["connectionRequest"] for r in seen) > 1  # requests shared an upstream connection


def test_head_requests_and_pipelined_requests(router: Router) -> None:
    head = raw(router.port, b"HEAD /big?bytes=5000 HTTP/1.1\r\nHost: x\r\n\r\n"
                            b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # fmt: skip
    first, _, rest = head.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and b"Content-Length: 5000" in first
    assert rest.startswith(b"HTTP/1.1 200")  # the HEAD had no body; the next answer follows
    assert b'"origin": "baseline"' in rest


def test_client_disconnect_is_propagated_upstream(
    router: Router, origins: dict[str, Origin]
) -> None:
    before = _established_to(origins["baseline"].port)
    sock = socket.create_connection(("127.0.0.1", router.port))
    sock.sendall(b"GET /sse?n=100&ms=100 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    during = _established_to(origins["baseline"].port)
    sock.close()
    poll.until(
        lambda: _established_to(origins["baseline"].port) < during,
        timeout=5,
        what="the router to close its upstream connection",
    )
    assert during >= max(before, 1)  # the stream holds an upstream connection (maybe a pooled one)
    assert _established_to(origins["baseline"].port) < during  # aborted, not returned to the pool


def _established_to(port: int) -> int:
    """Established TCP connections whose remote end is `port` (client side of the router)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def test_a_pooled_connection_the_upstream_dropped_is_retried_once(
    router: Router, origins: dict[str, Origin]
) -> None:
    origins["fork2"].forget()
    headers = {"baggage": f"sandbox={KEYS['pr-2']}"}
    with httpx.Client(headers=headers) as client:
        assert client.get(f"{router.url}/drop-next").status_code == 200
        response = client.get(f"{router.url}/echo")  # reuses the pooled connection the origin drops
    assert response.status_code == 200 and response.json()["origin"] == "fork2"
    echoes = [r for r in origins["fork2"].seen() if r["target"] == "/echo"]
    assert [r["dropped"] for r in echoes] == [True, False]  # sent twice: dropped, then answered
    assert echoes[1]["connectionRequest"] == 1  # the replay went on a new connection
