"""Preview links in a real browser (issue 15), on the reference system: sandboxd with its router
running examples/troubleshooter, and `fixed-agent` (a fork of the agent, prompt v2, and one of
cluster-mcp) made from the example's own spec.

A browser sends no `baggage`. Opening `links["preview:agent"]` gives the browser context the
router's preview cookie, and from then on the agent's page and its own `fetch()`es reach the
fork, whose MCP calls stay in the sandbox; another context on the same URL sees the baseline.
What the agent really received comes from the agent itself (`AGENT_DEBUG_REQUESTS=1`:
`GET /debug/requests` on each agent process, the fork's and the baseline's), and the route
decisions from the router's records (`GET /v1/sandboxes/fixed-agent/requests`).

Each context carries a cookie `who=<its name>`, which says whose requests an agent received."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.conftest import Watch
from tests.e2e.troubleshooter import SANDBOXES, Troubleshooter, running_troubleshooter
from tests.support import poll

pytestmark = pytest.mark.slow
SANDBOX = "fixed-agent"
COOKIE = "sandboxd-preview"
FORK = {"data-sandbox": SANDBOX, "data-prompt-version": "v2"}
BASELINE = {"data-sandbox": "baseline", "data-prompt-version": "v1"}


@dataclass
class Reference:
    app: Troubleshooter
    sandbox: dict[str, Any]
    """fixed-agent, as the API gives it."""
    baseline: str
    """The baseline agent's own URL (not the router's)."""
    fork: str
    """The forked agent's own URL."""

    @property
    def origin(self) -> str:
        """The router's listener for the agent: where a browser meets the agent."""
        return self.app.url("agent")

    @property
    def key(self) -> str:
        return str(self.sandbox["routingKey"])

    def received(self, upstream: str, *, who: str) -> list[dict[str, Any]]:
        """The requests an agent process received from the context `who`, newest first."""
        items = httpx.get(f"{upstream}/debug/requests", timeout=5).json()["items"]
        return [r for r in items if cookies(r).get("who") == who]

    def records(self, **params: str) -> list[dict[str, Any]]:
        """The router's records of fixed-agent's requests, newest first."""
        with self.app.server.client() as api:
            answer = api.get(f"/v1/sandboxes/{SANDBOX}/requests", params=params)
        assert answer.status_code == 200, answer.text
        return list(answer.json()["items"])


def header(request: dict[str, Any], name: str) -> list[str]:
    """Every value of a received request's header `name` (one per header line)."""
    return [value for n, value in request["headers"] if n == name]


def targets(requests: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(r["method"], r["target"]) for r in requests}


def cookies(request: dict[str, Any]) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for line in header(request, "cookie"):
        jar.load(line)
    return {name: morsel.value for name, morsel in jar.items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    data = tmp_path_factory.mktemp("preview")
    with running_troubleshooter(data, env={"AGENT_DEBUG_REQUESTS": "1"}) as app:
        sandbox = app.up(SANDBOXES / f"{SANDBOX}.yaml")
        (fork,) = [f["upstream"] for f in sandbox["forks"] if f["service"] == "agent"]
        with app.server.client() as api:
            services = {s["name"]: s for s in api.get("/v1/services").json()["items"]}
        world = Reference(app, sandbox, services["agent"]["baseline"]["url"], fork)
        # The router learns the preview token with the route table, a moment after Ready.
        link = sandbox["links"]["preview:agent"]
        poll.until(
            lambda: httpx.get(link, follow_redirects=True, timeout=5).text,
            lambda page: f'data-sandbox="{SANDBOX}"' in page,
            timeout=20,
            what="the router to know fixed-agent's preview token",
            ignoring=(httpx.HTTPError,),
        )
        yield world


NewPage = Callable[[str], Page]


@pytest.fixture
def new_page(browser: Browser, reference: Reference) -> Iterator[NewPage]:
    """`new_page(who)`: the page of a new browser context that has the cookie `who=<who>`;
    watched (console errors, requests to another origin than the agent's) to the test's end."""
    watch = Watch(reference.origin)
    contexts: list[BrowserContext] = []

    def new(who: str) -> Page:
        context = browser.new_context()
        contexts.append(context)
        context.add_cookies([{"name": "who", "value": who, "url": reference.origin}])
        return watch.new_page(context)

    yield new
    for context in contexts:
        context.close()
    watch.check()


def previewing(reference: Reference, page: Page) -> Page:
    """`page` after opening the preview link, as the API gives it."""
    answer = page.goto(reference.sandbox["links"]["preview:agent"])
    assert answer is not None and answer.status == 200, answer and answer.status
    assert page.url == f"{reference.origin}/"  # the link's `next`, on the same origin
    return page


def shows_build(page: Page, build: dict[str, str]) -> None:
    for attribute, value in build.items():
        expect(page.locator("#build")).to_have_attribute(attribute, value)


def diagnose(page: Page) -> tuple[str, str]:
    """Click "Diagnose": (the Cookie header the browser sent with the fetch, its trace id)."""
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/diagnose")) as sent:
        page.get_by_role("button", name="Diagnose").click()
    expect(page.locator("#answer")).to_be_visible()
    expect(page.locator("#status")).to_have_text("HTTP 200: diagnosed")
    expect(page.locator("#answer-diagnosis")).to_contain_text("DATABASE_URL")
    return sent.value.all_headers().get("cookie", ""), page.locator("#answer-trace").inner_text()


def test_a_preview_link_gives_its_browser_the_fork_and_another_browser_the_baseline(
    reference: Reference, new_page: NewPage
) -> None:
    a = previewing(reference, new_page("a"))
    shows_build(a, FORK)
    (preview,) = [c for c in a.context.cookies() if c["name"] == COOKIE]
    assert (preview["httpOnly"], preview["sameSite"], preview["path"]) == (True, "Lax", "/")
    assert preview["domain"] == "127.0.0.1"  # host-only
    _, trace = diagnose(a)
    expect(a.locator("#answer-build")).to_have_text(f"prompt v2, model rules-1, in {SANDBOX}")
    expect(a.locator("#answer-route")).to_have_text(f"sandbox={SANDBOX}")

    b = new_page("b")  # no link, the same URL, while `a` previews
    b.goto(f"{reference.origin}/")
    shows_build(b, BASELINE)
    diagnose(b)
    expect(b.locator("#answer-build")).to_have_text("prompt v1, model rules-1, in baseline")
    expect(b.locator("#answer-route")).to_have_text("baseline")
    a.reload()
    shows_build(a, FORK)

    # What each agent received: a's page, script, icon and fetch went to the fork, with the
    # sandbox's key in `baggage`; b's to the baseline, without it.
    to_fork = reference.received(reference.fork, who="a")
    assert targets(to_fork) >= {("GET", "/"), ("GET", "/page.js"), ("POST", "/diagnose")}
    for request in to_fork:
        assert f"sandbox={reference.key}" in header(request, "baggage")[0].split(",")
    assert reference.received(reference.baseline, who="a") == []
    to_baseline = reference.received(reference.baseline, who="b")
    assert {("GET", "/"), ("POST", "/diagnose")} <= targets(to_baseline)
    assert all(header(r, "baggage") == [] for r in to_baseline)
    assert reference.received(reference.fork, who="b") == []

    # The router's records: a's requests to the agent routed to the sandbox, and the fork's
    # MCP calls of that diagnosis carried the sandbox's key (cluster-mcp's fork served them;
    # logs-mcp has no fork in fixed-agent: the baseline, recorded as the sandbox's).
    routes = poll.until(
        lambda: {(r["service"], r["route"]) for r in reference.records(traceId=trace)},
        lambda seen: {s for s, _ in seen} >= {"cluster-mcp", "logs-mcp"},
        timeout=10,
        what=f"the router's records of trace {trace}",
    )
    assert {("cluster-mcp", "sandbox"), ("logs-mcp", "baseline")} <= routes
    assert ("cluster-mcp", "baseline") not in routes
    agent = poll.until(
        lambda: {(r["method"], r["attributes"]["url.path"], r["route"])
                 for r in reference.records(service="agent")},
        lambda seen: {("GET", "/"), ("POST", "/diagnose")} <= {(m, p) for m, p, _ in seen},
        timeout=10,
        what="the router's records of the page and its fetch",
    )  # fmt: skip
    assert {route for _, _, route in agent} == {"sandbox"}


def test_the_upstream_gets_the_users_cookies_unchanged_and_never_the_preview_cookie(
    reference: Reference, new_page: NewPage
) -> None:
    a = previewing(reference, new_page("c"))
    a.context.add_cookies(
        [
            {"name": "cart", "value": "sku-1%2Csku-2", "url": reference.origin},
            {"name": "pref", "value": '"dark"', "url": reference.origin},
        ]
    )
    a.evaluate("document.cookie = 'token=a=b==; path=/'")  # one set by the page's own script
    assert COOKIE not in a.evaluate("document.cookie")  # HttpOnly
    sent, _ = diagnose(a)
    ours = [p for p in sent.split("; ") if p.startswith(f"{COOKIE}=")]
    assert len(ours) == 1, sent  # the browser did send the preview cookie
    theirs = "; ".join(p for p in sent.split("; ") if not p.startswith(f"{COOKIE}="))

    (fetched,) = [r for r in reference.received(reference.fork, who="c") if r["method"] == "POST"]
    assert header(fetched, "cookie") == [theirs]  # byte for byte, in the browser's order
    assert cookies(fetched) == {
        "who": "c", "cart": "sku-1%2Csku-2", "pref": "dark", "token": "a=b==",
    }  # fmt: skip
    for upstream in (reference.fork, reference.baseline):
        everything = httpx.get(f"{upstream}/debug/requests", timeout=5).json()["items"]
        assert everything, upstream
        assert not [r for r in everything if COOKIE in str(r["headers"])], upstream


def test_sandboxd_preview_off_returns_the_browser_to_the_baseline(
    reference: Reference, new_page: NewPage
) -> None:
    a = previewing(reference, new_page("d"))
    shows_build(a, FORK)
    answer = a.goto(f"{reference.origin}/?sandboxd-preview=off")
    assert answer is not None and answer.status == 200
    assert a.url == f"{reference.origin}/"  # the parameter taken out of the URL
    shows_build(a, BASELINE)
    assert [c["name"] for c in a.context.cookies()] == ["who"]  # only the router's went
    diagnose(a)
    expect(a.locator("#answer-route")).to_have_text("baseline")
    a.reload()
    shows_build(a, BASELINE)
    after = reference.received(reference.baseline, who="d")
    assert {("GET", "/"), ("POST", "/diagnose")} <= targets(after)
    assert all(header(r, "baggage") == [] for r in after)
    # Before it: the fork's, with the key; never the `?sandboxd-preview=off` request itself.
    before = reference.received(reference.fork, who="d")
    assert ("GET", "/") in targets(before)
    assert not [r for r in before + after if "sandboxd-preview" in r["target"]]
