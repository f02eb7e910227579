"""Hostile and broken requests: refused with a 4xx, never a 5xx or a traceback, and the upstream
never sees a smuggled second request."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.router.conftest import Origin, Router, raw

SMUGGLE = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
CASES = [
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\n"
        + SMUGGLE,
        id="conflicting-content-length",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd"
        + SMUGGLE,
        id="duplicate-content-length",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\nabcd" + SMUGGLE,
        id="content-length-list",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        + SMUGGLE,
        id="content-length-with-chunked",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        + SMUGGLE,
        id="te-twice",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
        + SMUGGLE,
        id="te-other-coding",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLE,
        id="te-obfuscated",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
        + SMUGGLE,
        id="invalid-chunk-size",
    ),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n" + SMUGGLE,
        id="negative-chunk-size",
    ),
    pytest.param(
        b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n" + SMUGGLE,
        id="obsolete-line-folding",
    ),
    pytest.param(b"GET /echo HTTP/1.1\r\nHost : x\r\n\r\n" + SMUGGLE, id="space-before-colon"),
    pytest.param(b"GET /echo\r\n\r\n", id="http-0.9"),
    pytest.param(b"GET /echo HTTP/2.0\r\nHost: x\r\n\r\n", id="http-2-on-http-1"),
    pytest.param(b"G@T /echo HTTP/1.1\r\nHost: x\r\n\r\n", id="bad-method"),
    pytest.param(b"GET /echo HTTP/1.1\nHost: x\n\n", id="bare-lf"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", id="tls-client-hello"),
]


@pytest.fixture(autouse=True)
def router_prints_no_traceback(router: Router) -> Iterator[None]:
    """Checked after every test here, whichever ran and in whatever order: a refusal must be
    an answer, not an exception the router only survived."""
    yield
    err = (router.log.parent / "router.err").read_text()
    assert "Traceback" not in err, err[-3000:]


@pytest.mark.parametrize("request_bytes", CASES)
def test_smuggling_and_malformed_requests_get_a_4xx_and_reach_no_upstream(
    router: Router, origins: dict[str, Origin], request_bytes: bytes
) -> None:
    origins["baseline"].forget()
    answer = raw(router.port, request_bytes)
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1  # one answer, then the connection is closed
    assert b"Traceback" not in answer
    assert origins["baseline"].seen() == []  # neither the request nor a smuggled one arrived


def test_headers_over_the_limit_get_431(router: Router, origins: dict[str, Origin]) -> None:
    origins["baseline"].forget()
    response = httpx.get(f"{router.url}/echo", headers={"X-Big": "v" * 40_000})
    assert response.status_code == 431
    many = [(f"X-H{i}", "v" * 100) for i in range(400)]
    assert httpx.get(f"{router.url}/echo", headers=many).status_code == 431
    assert origins["baseline"].seen() == []
    assert httpx.get(f"{router.url}/echo", headers={"X-Ok": "v" * 20_000}).status_code == 200


def test_a_valid_request_after_a_refused_one_on_a_new_connection_works(router: Router) -> None:
    raw(router.port, b"GET /echo HTTP/1.1\r\nHost : x\r\n\r\n")
    assert httpx.get(f"{router.url}/echo").status_code == 200
