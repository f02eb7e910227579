"""Preview links' guards in a real browser (issue 15): `next` stays on the router's origin, a
token that is not live gets the baseline and loses its cookie, and the router keeps no cookie
jar (an upstream's `Set-Cookie` reaches only the browser it answered, and never one of the
router's own name).

The sandboxes here fork `echo` with `tests/support/origin.py`, which records what it receives
(`GET /__seen` on the fork's own URL) and has `Set-Cookie` endpoints; the baseline is
`python -m http.server` (a directory listing at `/`). Each context carries a cookie
`who=<its name>`, which says whose requests the fork received.

Every context is watched (`Watch`: console errors, requests to another origin than the
router's listener for `echo`). The browser resolves no name but 127.0.0.1 (`FLAGS`), so a
redirect off the origin fails at once, without DNS, and `Browsing.open` reports it as the
request to another origin it was."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Response
from playwright.sync_api import Error as PlaywrightError

from tests.browser.conftest import Watch, World
from tests.integration.conftest import wait_phase
from tests.support import poll

pytestmark = pytest.mark.slow
COOKIE = "sandboxd-preview"
ORIGIN = str(Path(__file__).parents[1] / "support" / "origin.py")


@dataclass
class Previewed:
    """A sandbox whose fork of `echo` is origin.py, as the API gives it."""

    sandbox: dict[str, Any]
    origin: str
    """The router's listener for `echo`: where a browser meets the service."""

    @property
    def link(self) -> str:
        return str(self.sandbox["links"]["preview:echo"])

    @property
    def token(self) -> str:
        return self.link.split("/.sandboxd/preview/", 1)[1].split("?", 1)[0]

    def received(self, *, who: str) -> list[dict[str, Any]]:
        """What the fork received from the context `who`, oldest first."""
        (fork,) = self.sandbox["forks"]
        seen = httpx.get(f"{fork['upstream']}/__seen", timeout=5).json()
        return [r for r in seen if cookies(r).get("who") == who]


def header(request: dict[str, Any], name: str) -> list[str]:
    """Every value of a received request's header `name` (one per header line)."""
    return [value for n, value in request["headers"] if n.lower() == name]


def cookies(request: dict[str, Any]) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for line in header(request, "cookie"):
        jar.load(line)
    return {name: morsel.value for name, morsel in jar.items()}


def preview(world: World, name: str) -> Previewed:
    """A Ready sandbox `name` whose fork of `echo` answers as `fork-<name>`, once the router
    knows its preview token (it learns it with the route table, a moment after Ready)."""
    command = ["sh", "-c", 'exec "$0" "$1" "$PORT" "$2"', sys.executable, ORIGIN, f"fork-{name}"]
    sandbox = world.make(name, forks=[{"service": "echo", "command": command}])
    previewed = Previewed(sandbox, f"http://127.0.0.1:{world.ports['echo']}")
    poll.until(
        lambda: httpx.get(previewed.link, follow_redirects=True, timeout=5).text,
        lambda body: f'"origin": "fork-{name}"' in body,
        timeout=20,
        what=f"the router to know {name}'s preview token",
        ignoring=(httpx.HTTPError,),
    )
    return previewed


@pytest.fixture(scope="module")
def guards(world: World) -> Previewed:
    return preview(world, "guards")


@dataclass
class Browsing:
    """New browser contexts on the router's `echo` origin, watched to the test's end."""

    browser: Browser
    watch: Watch
    contexts: list[BrowserContext] = field(default_factory=list)

    def new_page(self, who: str) -> Page:
        """The page of a new context that has the cookie `who=<who>`."""
        context = self.browser.new_context()
        self.contexts.append(context)
        context.add_cookies([{"name": "who", "value": who, "url": self.watch.origin}])
        # The browser's own request for an icon: the baseline (`http.server`) has none, and
        # the 404 would be logged as a console error.
        context.route("**/favicon.ico", lambda route: route.fulfill(status=204))
        return self.watch.new_page(context)

    def open(self, page: Page, url: str) -> Response:
        """`page` navigated to `url`; a navigation that left the origin fails as such."""
        try:
            answer = page.goto(url)
        except PlaywrightError as e:
            reason = e.message.splitlines()[0]
            raise AssertionError(f"{url}: {reason}; another origin: {self.watch.foreign}") from e
        assert answer is not None, url
        return answer


@pytest.fixture
def browsing(browser: Browser, world: World) -> Iterator[Browsing]:
    browsing = Browsing(browser, Watch(f"http://127.0.0.1:{world.ports['echo']}"))
    yield browsing
    for context in browsing.contexts:
        context.close()
    browsing.watch.check()


def preview_cookie(page: Page) -> str | None:
    values = [c["value"] for c in page.context.cookies() if c["name"] == COOKIE]
    assert len(values) <= 1, values
    return values[0] if values else None


def set_cookies(answer: Response) -> list[str]:
    """The `Set-Cookie` lines of an answer as the browser received them."""
    return [h["value"] for h in answer.headers_array() if h["name"].lower() == "set-cookie"]


def is_baseline(answer: Response) -> bool:
    return answer.headers.get("sandboxd-route") == "baseline" and "Directory listing" in (
        answer.text()
    )


@pytest.mark.parametrize(
    "next_path",
    ["//evil.example", "https://evil.example", "%2F%2Fevil.example",
     "https%3A%2F%2Fevil.example", "/%2Fevil.example", "/\\evil.example"],
)  # fmt: skip
def test_a_next_off_the_origin_lands_on_its_root(
    guards: Previewed, browsing: Browsing, next_path: str
) -> None:
    page = browsing.new_page("next")
    link = f"{guards.origin}/.sandboxd/preview/{guards.token}?next={next_path}"
    answer = browsing.open(page, link)
    assert page.url == f"{guards.origin}/", page.url
    assert answer.status == 200 and '"origin": "fork-guards"' in answer.text()
    redirect = answer.request.redirected_from
    assert redirect is not None and redirect.url.startswith(f"{guards.origin}/.sandboxd/preview/")
    hop = redirect.response()
    assert hop is not None and (hop.status, hop.headers["location"]) == (303, "/")
    assert preview_cookie(page) == guards.token


class OffTheOrigin(BaseHTTPRequestHandler):
    """A router gone wrong: every request gets a 303 to //evil.example."""

    def do_GET(self) -> None:
        self.send_response(303)
        self.send_header("Location", "//evil.example")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_redirect_off_the_origin_fails_as_a_request_to_another_origin(browser: Browser) -> None:
    """The guard of the test above, checked: had the router sent the browser to evil.example,
    the test would say so, at once and without asking DNS."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), OffTheOrigin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browsing = Browsing(browser, Watch(f"http://127.0.0.1:{server.server_port}"))
    try:
        page = browsing.new_page("wrong")
        with pytest.raises(AssertionError, match="ERR_NAME_NOT_RESOLVED") as failed:
            browsing.open(page, f"{browsing.watch.origin}/.sandboxd/preview/x?next=/")
        assert "another origin: ['http://evil.example/']" in str(failed.value)
    finally:
        for context in browsing.contexts:
            context.close()
        server.shutdown()
        server.server_close()


def tampered(token: str) -> str:
    """`token` with its last character changed (still base64url, still 32 characters)."""
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def test_a_tampered_token_in_the_cookie_gets_the_baseline_and_loses_the_cookie(
    guards: Previewed, browsing: Browsing
) -> None:
    page = browsing.new_page("tampered")
    assert '"origin": "fork-guards"' in browsing.open(page, guards.link).text()
    assert preview_cookie(page) == guards.token
    page.context.add_cookies([{"name": COOKIE, "value": tampered(guards.token),
                               "url": guards.origin, "httpOnly": True, "sameSite": "Lax"}])  # fmt: skip
    assert preview_cookie(page) == tampered(guards.token)

    answer = browsing.open(page, f"{guards.origin}/")
    assert is_baseline(answer), answer.headers
    assert [c.split(";")[0] for c in set_cookies(answer)] == [f"{COOKIE}="]
    assert preview_cookie(page) is None
    assert [c["name"] for c in page.context.cookies()] == ["who"]  # only the router's went
    assert is_baseline(browsing.open(page, f"{guards.origin}/"))
    # The fork saw the context's first visit only, never after the token was tampered with.
    assert [r["target"] for r in guards.received(who="tampered")] == ["/"]


def test_a_tampered_link_gets_the_baseline_and_clears_a_live_cookie(
    guards: Previewed, browsing: Browsing
) -> None:
    page = browsing.new_page("tampered-link")
    browsing.open(page, guards.link)
    assert preview_cookie(page) == guards.token
    link = guards.link.replace(guards.token, tampered(guards.token))
    answer = browsing.open(page, link)
    assert page.url == f"{guards.origin}/"
    assert is_baseline(answer)
    hop = answer.request.redirected_from and answer.request.redirected_from.response()
    assert hop and hop.status == 303 and hop.headers["sandboxd-route"] == "baseline"
    assert preview_cookie(page) is None
    assert len(guards.received(who="tampered-link")) == 1  # the live link's visit only


def test_a_deleted_sandboxs_cookie_gets_the_baseline_and_is_cleared(
    world: World, browsing: Browsing
) -> None:
    gone = preview(world, "gone")
    page = browsing.new_page("gone")
    assert '"origin": "fork-gone"' in browsing.open(page, gone.link).text()
    assert preview_cookie(page) == gone.token
    assert world.api.delete("/v1/sandboxes/gone").status_code == 202
    wait_phase(world.api, "gone", "Deleted")

    # The router learns of the deletion with its next route table: waited for outside the
    # browser, whose next request is then the first after it.
    poll.until(
        lambda: httpx.get(gone.origin, cookies={COOKIE: gone.token}, timeout=5).headers,
        lambda headers: headers.get("sandboxd-route") == "baseline",
        timeout=20,
        what="the router to forget gone's route",
    )
    assert preview_cookie(page) == gone.token
    answer = browsing.open(page, f"{gone.origin}/")
    assert is_baseline(answer)
    assert [c.split(";")[0] for c in set_cookies(answer)] == [f"{COOKIE}="]
    assert preview_cookie(page) is None
    again = browsing.open(page, gone.link)  # the old link: revoked
    assert page.url == f"{gone.origin}/"
    assert is_baseline(again)
    assert preview_cookie(page) is None


def test_an_upstreams_cookie_reaches_only_the_browser_it_answered(
    guards: Previewed, browsing: Browsing
) -> None:
    a, b = browsing.new_page("a"), browsing.new_page("b")
    browsing.open(a, guards.link)
    browsing.open(b, guards.link)
    set_for_a = browsing.open(a, f"{guards.origin}/cookie")
    assert set_cookies(set_for_a) == ["session=fork-guards; Path=/"]
    assert {c["name"]: c["value"] for c in a.context.cookies()}["session"] == "fork-guards"
    sent_by_a = browsing.open(a, f"{guards.origin}/echo").json()["received"]
    assert cookies(sent_by_a) == {"who": "a", "session": "fork-guards"}  # a sends it back

    answer = browsing.open(b, f"{guards.origin}/echo")
    assert answer.json()["origin"] == "fork-guards"  # the same fork, through the same router
    assert set_cookies(answer) == []
    assert "session" not in {c["name"] for c in b.context.cookies()}
    for request in guards.received(who="b"):
        assert "session" not in cookies(request), request
        assert COOKIE not in str(request["headers"]), request
    assert [r["target"] for r in guards.received(who="b")] == ["/", "/echo"]
    assert cookies(guards.received(who="a")[-1])["session"] == "fork-guards"


def test_an_upstreams_cookie_of_the_routers_name_never_reaches_the_browser(
    guards: Previewed, browsing: Browsing
) -> None:
    page = browsing.new_page("named")
    browsing.open(page, guards.link)
    answer = browsing.open(page, f"{guards.origin}/router-cookie")
    assert set_cookies(answer) == ["session=fork-guards; Path=/"]  # the fork's other cookie
    jar = {c["name"]: c["value"] for c in page.context.cookies()}
    assert jar == {"who": "named", "session": "fork-guards", COOKIE: guards.token}
    assert '"origin": "fork-guards"' in browsing.open(page, f"{guards.origin}/").text()  # still
    last = guards.received(who="named")[-1]
    assert header(last, "cookie") == ["who=named; session=fork-guards"]
