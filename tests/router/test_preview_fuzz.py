"""Fuzzing the preview cookie's parser and the router's preview paths (issue 15): never an
exception, never a 5xx, and the other cookies always pass byte for byte."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandboxd_router import preview
from sandboxd_router.headers import RequestHeaders
from sandboxd_router.table import EMPTY
from tests.router.conftest import KEYS, Origin, Router, raw, routes_table, start_router
from tests.support.server import free_port

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))  # fmt: skip
OURS = (b"sandboxd-preview", b"__Host-sandboxd-preview")
TOKEN = "tokf" + "f" * 28
NAMES = st.sampled_from([b"sandboxd-preview", b"__Host-sandboxd-preview", b" sandboxd-preview",
                         b"a", b"Sandboxd-Preview", b"", b"sandboxd-preview\t"])  # fmt: skip
VALUE = st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
PIECE = st.tuples(NAMES, st.sampled_from([b"=", b"", b"=="]), VALUE).map(b"".join)
COOKIE = st.lists(PIECE, max_size=6).flatmap(
    lambda ps: st.sampled_from([b";", b"; ", b" ;"]).map(lambda sep: sep.join(ps))
)


def head_with(cookies: list[bytes]) -> RequestHeaders:
    head = RequestHeaders()
    head.add(b"Accept", b"*/*", b"accept")
    for value in cookies:
        head.add(b"Cookie", value, b"cookie")
    return head


@FUZZ
@given(cookies=st.lists(COOKIE, min_size=1, max_size=3))
def test_the_parser_never_raises_and_keeps_every_other_cookie(cookies: list[bytes]) -> None:
    head = head_with(cookies)
    preview.take_cookie(head)
    kept = [v for line, n in zip(head.lines, head.names, strict=True) if n == b"cookie"
            for v in [line.split(b":", 1)[1][1:-2]]]  # fmt: skip
    expected = []
    for value in cookies:
        pieces = value.split(b";")
        others = [p for p in pieces if p.partition(b"=")[0].strip(b" \t") not in OURS]
        if len(others) == len(pieces):
            expected.append(value)  # untouched
        elif b";".join(others).strip(b" \t"):
            expected.append(b";".join(others).strip(b" \t"))  # each other cookie as it came
    assert kept == expected
    assert head.names[0] == b"accept"


@FUZZ
@given(target=st.binary(max_size=60), method=st.sampled_from([b"GET", b"HEAD", b"POST"]))
def test_inspect_never_raises_and_redirects_only_to_a_relative_path(
    target: bytes, method: bytes
) -> None:
    for prefixed in (target, preview.LINK + target, b"/x?" + target + b"&sandboxd-preview=off"):
        found = preview.inspect(head_with([]), prefixed, method, EMPTY, close=False)
        if found.answer is not None:
            location = found.answer.split(b"\r\nLocation: ", 1)[1].split(b"\r\n", 1)[0]
            assert location == preview.safe_next(location)
            assert location.startswith(b"/") and not location.startswith((b"//", b"/\\"))


@pytest.fixture(scope="module")
def fuzzed(
    origins: dict[str, Origin], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Router]:
    table = routes_table(free_port(), origins)
    table["routes"][KEYS["pr-1"]].update(preview=TOKEN, expiresAt=int(time.time()) + 3600)
    r = start_router(tmp_path_factory.mktemp("fuzz-preview"), table)
    yield r
    r.proc.terminate()
    r.proc.wait()


@settings(FUZZ, max_examples=150)
@given(
    cookie=COOKIE | st.just(b"sandboxd-preview=" + TOKEN.encode()),
    target=st.sampled_from(
        [
            b"/echo",
            b"/.sandboxd/preview/",
            b"/.sandboxd/preview/exit?next=",
            b"/.sandboxd/preview/" + TOKEN.encode() + b"?next=",
            b"/e?sandboxd-preview=off&",
        ]
    ),
    tail=st.binary(max_size=20).map(lambda b: bytes(c for c in b if 0x21 <= c <= 0x7E)),
)
def test_the_router_never_answers_a_5xx_to_preview_traffic(
    fuzzed: Router, cookie: bytes, target: bytes, tail: bytes
) -> None:
    request = (b"GET " + target + tail + b" HTTP/1.1\r\nHost: x\r\nCookie: " + cookie
               + b"\r\nConnection: close\r\n\r\n")  # fmt: skip
    answer = raw(fuzzed.port, request)
    status = int(answer.split(b" ", 2)[1])
    assert status in (200, 303, 400), answer[:300]
    assert "Traceback" not in (fuzzed.log.parent / "router.err").read_text()
