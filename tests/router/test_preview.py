"""Preview links and the preview cookie (issue 15): a real router in front of real origins."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.router.conftest import KEYS, Origin, Router, raw, routes_table, start_router
from tests.support import access_log, poll
from tests.support.server import free_port

TOKENS = {"pr-1": "tok1" + "a" * 28, "pr-2": "tok2" + "b" * 28}
EXPIRES = int(time.time()) + 3600
GONE = "tok9" + "z" * 28  # the token of a sandbox no longer in the table


@pytest.fixture(scope="module")
def router(
    origins: dict[str, Origin], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Router]:
    table = routes_table(free_port(), origins)
    for name, token in TOKENS.items():
        table["routes"][KEYS[name]].update(preview=token, expiresAt=EXPIRES)
    tmp = tmp_path_factory.mktemp("router")
    r = start_router(tmp, table, "--record-file", str(tmp / "records.jsonl"))
    yield r
    r.proc.terminate()
    r.proc.wait()


def received(response: httpx.Response) -> dict[str, Any]:
    return dict(response.json()["received"])


def headers_named(response: httpx.Response, name: str) -> list[str]:
    return [v for k, v in received(response)["headers"] if k.lower() == name]


def link(router: Router, token: str, next_path: str | None = "/echo") -> httpx.Response:
    query = {} if next_path is None else {"next": next_path}
    return httpx.get(f"{router.url}/.sandboxd/preview/{token}", params=query)


def attributes(set_cookie: str) -> dict[str, str]:
    parts = [p.strip() for p in set_cookie.split(";")]
    return {k.lower(): v for k, _, v in (p.partition("=") for p in parts[1:])}


def test_a_preview_link_redirects_and_sets_the_cookie(router: Router) -> None:
    response = link(router, TOKENS["pr-1"], "/echo?x=1")
    assert response.status_code == 303
    assert response.headers["location"] == "/echo?x=1"
    assert response.headers["cache-control"] == "no-store"
    [cookie] = response.headers.get_list("set-cookie")
    assert cookie.startswith(f"sandboxd-preview={TOKENS['pr-1']};")
    flags = attributes(cookie)
    assert flags["path"] == "/" and flags["samesite"] == "Lax" and "httponly" in flags
    assert "domain" not in flags and "secure" not in flags  # host-only; plain HTTP
    assert 0 < int(flags["max-age"]) <= EXPIRES - time.time() + 1  # at most the TTL left


def test_behind_https_the_cookie_is_secure_with_the_host_prefix(router: Router) -> None:
    response = httpx.get(
        f"{router.url}/.sandboxd/preview/{TOKENS['pr-1']}",
        headers={"X-Forwarded-Proto": "https"},
    )
    [cookie] = response.headers.get_list("set-cookie")
    assert cookie.startswith(f"__Host-sandboxd-preview={TOKENS['pr-1']};")
    assert "secure" in attributes(cookie) and attributes(cookie)["path"] == "/"
    assert response.headers["location"] == "/"


@pytest.mark.parametrize(
    "next_path",
    [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "%2F%2Fevil.example",
        "/%2Fevil.example",
        "%2F%5Cevil.example",
        "https%3A%2F%2Fevil.example",
        "/\t/evil.example",
        "/a\r\nSet-Cookie: x=1",
        "javascript:alert(1)",
        "",
    ],
)
def test_next_is_a_relative_path_only(router: Router, next_path: str) -> None:
    # sent as written (httpx would encode it): what a crafted link holds
    target = f"/.sandboxd/preview/{TOKENS['pr-1']}?next={next_path}".encode("latin-1")
    for byte, escaped in ((b"\t", b"%09"), (b"\r", b"%0D"), (b"\n", b"%0A"), (b" ", b"%20")):
        target = target.replace(byte, escaped)
    answer = raw(
        router.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    head = answer.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 303 ")
    assert b"\r\nLocation: /\r\n" in head
    assert head.count(b"Set-Cookie") == 1


def test_the_cookie_routes_to_the_fork_and_names_the_sandbox_in_baggage(router: Router) -> None:
    cookies = f'a=1; sandboxd-preview={TOKENS["pr-1"]}; b="two words";c=3'
    response = httpx.get(f"{router.url}/echo", headers={"Cookie": cookies})
    assert response.json()["origin"] == "fork1"
    assert response.headers["sandboxd-route"] == "sandbox=pr-1"
    assert headers_named(response, "cookie") == ['a=1; b="two words";c=3']  # byte for byte
    assert headers_named(response, "baggage") == [f"sandbox={KEYS['pr-1']}"]


def test_the_sandbox_is_merged_into_existing_baggage(router: Router) -> None:
    response = httpx.get(
        f"{router.url}/echo",
        headers={"Cookie": f"sandboxd-preview={TOKENS['pr-2']}", "baggage": "userid=alice"},
    )
    assert response.json()["origin"] == "fork2"
    assert headers_named(response, "baggage") == [f"sandbox={KEYS['pr-2']},userid=alice"]
    assert headers_named(response, "cookie") == []  # it held only the router's cookie


def test_an_explicit_key_wins_over_the_cookie(router: Router) -> None:
    baggage = f"sandbox={KEYS['pr-2']}"
    response = httpx.get(
        f"{router.url}/echo",
        headers={"Cookie": f"sandboxd-preview={TOKENS['pr-1']}; z=9", "baggage": baggage},
    )
    assert response.json()["origin"] == "fork2"
    assert headers_named(response, "baggage") == [baggage]  # untouched
    assert headers_named(response, "cookie") == ["z=9"]


@pytest.mark.parametrize(
    "token", [GONE, TOKENS["pr-1"][:-1] + "b", "x" * 5000, "not a token!", '"quoted"', ""]
)
def test_a_token_that_is_not_live_gets_the_baseline_and_a_cleared_cookie(
    router: Router, token: str
) -> None:
    response = httpx.get(
        f"{router.url}/echo", headers={"Cookie": f"keep=me; sandboxd-preview={token}"}
    )
    assert response.status_code == 200 and response.json()["origin"] == "baseline"
    [cleared] = response.headers.get_list("set-cookie")
    assert cleared.startswith("sandboxd-preview=;") and attributes(cleared)["max-age"] == "0"
    assert headers_named(response, "cookie") == ["keep=me"]
    assert headers_named(response, "baggage") == []


def test_a_link_with_a_dead_token_clears_and_lands_on_next(router: Router) -> None:
    response = link(router, GONE)
    assert response.status_code == 303 and response.headers["location"] == "/echo"
    assert response.headers["sandboxd-route"] == "baseline"
    assert attributes(response.headers["set-cookie"])["max-age"] == "0"


def test_exit_and_off_clear_the_cookie(router: Router) -> None:
    jar = f"sandboxd-preview={TOKENS['pr-1']}"
    gone = link(router, "exit", "/echo")
    assert gone.status_code == 303 and gone.headers["location"] == "/echo"
    assert attributes(gone.headers["set-cookie"])["max-age"] == "0"
    off = httpx.get(f"{router.url}/echo?a=1&sandboxd-preview=off&b=2", headers={"Cookie": jar})
    assert off.status_code == 303 and off.headers["location"] == "/echo?a=1&b=2"
    assert attributes(off.headers["set-cookie"])["max-age"] == "0"
    crafted = raw(router.port, b"GET //evil.example?sandboxd-preview=off HTTP/1.1\r\nHost: x\r\n"
                  b"Cookie: sandboxd-preview=x\r\nConnection: close\r\n\r\n")  # fmt: skip
    assert b"\r\nLocation: /\r\n" in crafted


def test_a_browser_session_follows_the_link_then_exits(router: Router) -> None:
    with httpx.Client(base_url=router.url, follow_redirects=True) as browser:
        first = browser.get(f"/.sandboxd/preview/{TOKENS['pr-1']}", params={"next": "/echo"})
        assert first.json()["origin"] == "fork1"
        assert browser.get("/echo").json()["origin"] == "fork1"  # the page's own fetches
        assert browser.get("/.sandboxd/preview/exit?next=/echo").json()["origin"] == "baseline"
        assert browser.get("/echo").json()["origin"] == "baseline"
    with httpx.Client(base_url=router.url) as other:  # another client: the baseline
        assert other.get("/echo").json()["origin"] == "baseline"


def test_an_upstream_set_cookie_of_the_routers_name_is_dropped(router: Router) -> None:
    with httpx.Client(base_url=router.url) as first:
        response = first.get("/router-cookie", headers={"baggage": f"sandbox={KEYS['pr-1']}"})
        assert response.headers.get_list("set-cookie") == ["session=fork1; Path=/"]
        assert "sandboxd-preview" not in first.cookies
    with httpx.Client(base_url=router.url) as second:  # no cookie jar in the proxy
        assert headers_named(second.get("/echo"), "cookie") == []
        assert second.get("/echo").headers.get_list("set-cookie") == []


def test_keep_alive_survives_the_redirect(router: Router) -> None:
    requests = (
        f"GET /.sandboxd/preview/{TOKENS['pr-1']}?next=/echo HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = raw(router.port, requests)
    assert answer.startswith(b"HTTP/1.1 303 ")
    assert answer.count(b"HTTP/1.1 ") == 2 and b'"origin": "baseline"' in answer


def test_a_preview_link_with_a_body_or_another_method_is_refused(router: Router) -> None:
    post = httpx.post(f"{router.url}/.sandboxd/preview/{TOKENS['pr-1']}", content=b"x")
    assert post.status_code == 200 and post.json()["origin"] == "baseline"  # not ours: passed
    body = raw(router.port, f"GET /.sandboxd/preview/{TOKENS['pr-1']} HTTP/1.1\r\nHost: x\r\n"
               "Content-Length: 1\r\n\r\nx".encode())  # fmt: skip
    assert body.startswith(b"HTTP/1.1 400 ")


def traced() -> tuple[str, dict[str, str]]:
    """A trace id of its own, and the headers that carry it: what picks a request's lines."""
    trace_id = uuid.uuid4().hex
    return trace_id, {"traceparent": f"00-{trace_id}-{'1' * 16}-01"}


def logged(router: Router, trace_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request's access log line and its full record (`--record-file`)."""
    records = router.log.parent / "records.jsonl"

    def both() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        line = access_log.entries(router.log, trace_id=trace_id)
        full = [r for r in access_log.entries(records) if trace_id in (r["traceparent"] or "")]
        return line, full

    line, full = poll.until(both, lambda found: all(found), timeout=10, what="the logged lines")
    assert len(line) == 1 and len(full) == 1
    return line[0], full[0]


@pytest.mark.parametrize(
    ("method", "target", "route", "sandbox", "path"),
    [
        ("GET", f"/.sandboxd/preview/{TOKENS['pr-1']}?next=/echo", "sandbox=pr-1", "pr-1", "-"),
        ("HEAD", f"/.sandboxd/preview/{TOKENS['pr-2']}", "sandbox=pr-2", "pr-2", "-"),
        ("GET", f"/.sandboxd/preview/{GONE}?next=/echo", "baseline", "", "-"),
        ("GET", "/.sandboxd/preview/exit?next=/echo", "baseline", "", "exit"),
        ("GET", "/echo?sandboxd-preview=off", "baseline", "", None),
    ],
)
def test_the_routers_own_answers_are_logged_like_any_request(
    router: Router, method: str, target: str, route: str, sandbox: str, path: str | None
) -> None:
    trace_id, headers = traced()
    cookie = {"Cookie": f"sandboxd-preview={TOKENS['pr-1']}"}
    answer = httpx.request(method, f"{router.url}{target}", headers={**headers, **cookie})
    assert answer.status_code == 303 and answer.headers["sandboxd-route"] == route
    line, full = logged(router, trace_id)
    assert (line["service"], line["route"], line["method"]) == ("echo", route, method)
    assert line["status"] == 303 and line["bytesOut"] == 0
    assert (full["service"], full["sandbox"], full["status"]) == ("echo", sandbox, 303)
    assert full["routing_key"] == (KEYS[sandbox] if sandbox else "")
    assert full["path"] == (f"/.sandboxd/preview/{path}" if path else "/echo")
    assert full["error"] == ""  # not an error of the service's


def test_a_links_token_is_never_logged(router: Router) -> None:
    trace_id, headers = traced()
    token = TOKENS["pr-1"]
    refused = raw(router.port, f"GET /.sandboxd/preview/{token} HTTP/1.1\r\nHost: x\r\n"
                  f"traceparent: {headers['traceparent']}\r\nContent-Length: 1\r\n\r\nx".encode())  # fmt: skip
    assert refused.startswith(b"HTTP/1.1 400 ")
    line, full = logged(router, trace_id)
    assert (line["service"], line["status"], full["path"]) == ("echo", 400, "/.sandboxd/preview/-")
    answered_id, answered = traced()
    assert httpx.get(f"{router.url}/.sandboxd/preview/{token}", headers=answered).status_code == 303
    logged(router, answered_id)  # (its lines are in the files now)
    for path in (router.log, router.log.parent / "records.jsonl"):
        assert token not in path.read_text()


def test_malformed_cookie_headers_never_fail(router: Router, tmp_path: Path) -> None:
    for cookie in [b";;;", b"=", b"sandboxd-preview", b"sandboxd-preview=;", b"\xff\xfe=1", b" "]:
        answer = raw(router.port, b"GET /echo HTTP/1.1\r\nHost: x\r\nCookie: " + cookie +
                     b"\r\nConnection: close\r\n\r\n")  # fmt: skip
        assert answer.startswith(b"HTTP/1.1 200 "), cookie


@pytest.fixture(scope="module")
def mcp_router(
    origins: dict[str, Origin], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Router]:
    table = routes_table(free_port(), origins, protocol="mcp")
    for name, token in TOKENS.items():
        table["routes"][KEYS[name]].update(preview=token, expiresAt=EXPIRES)
    r = start_router(tmp_path_factory.mktemp("mcp-router"), table)
    yield r
    r.proc.terminate()
    r.proc.wait()


def rpc(meta: dict[str, str] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "t"} if meta is None else {"name": "t", "_meta": meta}
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}


def test_on_mcp_a_key_in_params_meta_wins_over_the_cookie(mcp_router: Router) -> None:
    cookie = {"Cookie": f"sandboxd-preview={TOKENS['pr-1']}"}
    by_meta = httpx.post(
        f"{mcp_router.url}/mcp", json=rpc({"baggage": f"sandbox={KEYS['pr-2']}"}), headers=cookie
    )
    assert by_meta.json()["origin"] == "fork2"
    assert headers_named(by_meta, "baggage") == [] and headers_named(by_meta, "cookie") == []
    by_cookie = httpx.post(f"{mcp_router.url}/mcp", json=rpc(), headers=cookie)
    assert by_cookie.json()["origin"] == "fork1"
    assert headers_named(by_cookie, "baggage") == [f"sandbox={KEYS['pr-1']}"]


def test_the_gateway_answers_preview_links_and_routes_by_the_cookie(
    origins: dict[str, Origin], tmp_path_factory: pytest.TempPathFactory
) -> None:
    table = routes_table(free_port(), origins)
    table["routes"][KEYS["pr-1"]].update(preview=TOKENS["pr-1"], expiresAt=EXPIRES)
    port = free_port()
    gateway = start_router(tmp_path_factory.mktemp("gw"), table, "--gateway-port", str(port))
    try:
        poll.port_open(port, timeout=15)
        host = {"Host": "echo.example.com"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=host) as browser:
            opened = browser.get(f"/.sandboxd/preview/{TOKENS['pr-1']}?next=/echo")
            assert opened.status_code == 303 and "sandboxd-preview" in browser.cookies
            assert browser.get("/echo").json()["origin"] == "fork1"
    finally:
        gateway.proc.terminate()
        gateway.proc.wait()


@pytest.mark.parametrize(
    "cookie", ["a=1;b=2", "x = y ;; z", "sandboxd-previewer=1", "a=sandboxd-preview=1; b"]
)
def test_a_cookie_header_without_the_routers_cookie_passes_as_it_came(
    router: Router, cookie: str
) -> None:
    response = httpx.get(f"{router.url}/echo", headers={"Cookie": cookie})
    assert response.json()["origin"] == "baseline"
    assert headers_named(response, "cookie") == [cookie.strip()]
    assert response.headers.get_list("set-cookie") == []
