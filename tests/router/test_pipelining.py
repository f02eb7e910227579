"""Pipelined requests: answered in order, a refusal in its own turn, and a bounded queue."""

from __future__ import annotations

from tests.router.conftest import Origin, Router, raw

GET = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"


def test_a_malformed_request_behind_one_in_flight_is_refused_in_its_turn(
    router: Router, origins: dict[str, Origin]
) -> None:
    origins["baseline"].forget()
    answer = raw(router.port, b"GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n"
                              b"GET /echo HTTP/1.1\r\nHost : x\r\n\r\n")  # fmt: skip
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 ")  # the first request's own answer, first
    assert rest.startswith(b"slow") and b"HTTP/1.1 400 " in rest
    assert [r["target"] for r in origins["baseline"].seen()] == ["/slow?ms=300"]


def test_too_many_pipelined_requests_are_refused_past_the_queue_bound(
    router: Router, origins: dict[str, Origin]
) -> None:
    origins["baseline"].forget()
    answer = raw(router.port, GET * 40)
    assert answer.count(b"HTTP/1.1 200 ") == 16
    assert answer.count(b"HTTP/1.1 429 ") == 1 and b'"too_many_pipelined"' in answer
    assert len(origins["baseline"].seen()) == 16
