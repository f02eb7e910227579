"""Who may open the sandbox's page (issue 15), in a real browser: bad links get the 403 page
and leave no cookie that opens it, the page's cookie opens no `/v1` call and no other
sandbox's page, a scoped token signed in on `GET /` lists only its repository's sandboxes,
and bad input (an unknown name, a huge or malformed token, HTML) gets a clear page that shows
what it was given as text. The server's side is tests/integration/test_page.py.

Chromium logs every 4xx answer, to a document or a `fetch()`, as a console error ("Failed to
load resource: the server responded with a status of 403"), one line at that URL (seen with
Chromium 156). The tests take out only the line of an answer they asked for (`answered`) and
fail on any other error, as `open_page` does."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Response, expect

from sandboxd.core.capability import mint_view
from tests.browser.conftest import VIEW_KEY, OpenPage, Watch, World

pytestmark = pytest.mark.slow
VIEW_COOKIE = "sandboxd-view"
SESSION_COOKIE = "sandboxd-session"
ACME = "github.repo=acme/agents"
SIGN_IN_HINT = "Open the link on the pull request again, or sign in with a token."
XSS = "<img src=x onerror=window.pwned=1>"


def cap(world: World, name: str) -> str:
    """The view capability in the sandbox's link."""
    return parse_qs(urlsplit(world.link(name)).query)["view"][0]


def link(world: World, name: str, token: str) -> str:
    return f"{world.server.url}/s/{quote(name)}?view={quote(token, safe='')}"


def answered(watch: Watch, url: str, status: int) -> None:
    """The browser logged the 4xx this test asked `url` for: not an error of the page. Only
    the console line of that status at exactly that URL is taken out. (Chromium logs it a
    moment after the response: the sync API delivers the event while it waits on a page.)"""
    logged = f"the server responded with a status of {status}"
    located = f"'url': '{url}'"

    def mine() -> list[str]:
        return [e for e in watch.errors if logged in e and located in e]

    for _ in range(100):
        if mine():
            break
        watch.pages[-1].wait_for_timeout(50)
    found = mine()
    assert len(found) == 1, (url, status, watch.errors)
    watch.errors[:] = [e for e in watch.errors if e not in found]


NewPage = Callable[..., Page]


@pytest.fixture
def new_page(browser: Browser, watch: Watch) -> Iterator[NewPage]:
    """`new_page(**context_options)`: the page of a new browser context with no cookie,
    watched to the test's end like `open_page`'s."""
    contexts: list[BrowserContext] = []

    def new(**options: Any) -> Page:
        context = browser.new_context(**options)
        contexts.append(context)
        return watch.new_page(context)

    yield new
    for context in contexts:
        context.close()
    watch.check()


@pytest.fixture(scope="module")
def neighbour(world: World) -> str:
    """Another sandbox of the same repository, for pr-7's link to try."""
    world.make("neighbour", forks=False, labels={"github.repo": "acme/agents", "github.pr": "8"})
    return "neighbour"


@pytest.fixture(scope="module")
def elsewhere(world: World) -> str:
    """A sandbox of another repository."""
    world.make("elsewhere", forks=False, labels={"github.repo": "other/repo", "github.pr": "1"})
    return "elsewhere"


def view_cookies(page: Page) -> list[dict[str, Any]]:
    return [dict(c) for c in page.context.cookies() if c["name"] == VIEW_COOKIE]


def shows_problem(page: Page, answer: Response | None, status: int, heading: str) -> None:
    """The page is sandboxd's own page for that refusal, as text."""
    assert answer is not None and answer.status == status, answer and answer.status
    assert answer.headers["content-type"].startswith("text/html")
    expect(page.locator("#problem")).to_have_text(heading)
    expect(page.locator("#problem")).to_have_attribute("data-status", str(status))
    expect(page).to_have_title(f"{heading} · sandboxd")


def refused(page: Page, watch: Watch, url: str) -> Response | None:
    """Go to `url` and check that it is the 403 page."""
    answer = page.goto(url)
    shows_problem(page, answer, 403, "Not allowed")
    expect(page.locator("#problem-hint")).to_have_text(SIGN_IN_HINT)
    answered(watch, url, 403)
    return answer


def tampered(token: str) -> str:
    """One character of the signature changed (not the last: it carries padding bits)."""
    expires, mac = token.split(".")[1:]
    other = "A" if mac[5] != "A" else "B"
    return f"v1.{expires}.{mac[:5]}{other}{mac[6:]}"


def expired(world: World, name: str) -> str:
    """A link to `name` signed with the server's view key that expired a minute ago."""
    uid = world.sandbox(name)["uid"]
    return mint_view(VIEW_KEY.encode(), name=name, uid=uid, expires=int(time.time()) - 60)


BAD_LINKS: dict[str, tuple[Callable[[World, str], tuple[str, str]], str]] = {
    # what: (the page and token it opens, what the page says of it)
    "tampered": (lambda w, n: ("pr-7", tampered(cap(w, "pr-7"))), "not valid here"),
    "expired": (lambda w, n: ("pr-7", expired(w, "pr-7")), "the token expired at"),
    "another sandbox's": (lambda w, n: (n, cap(w, "pr-7")), "not valid here"),
}


@pytest.mark.parametrize("what", list(BAD_LINKS))
def test_a_bad_link_gets_the_403_page_and_no_cookie_that_opens_it(
    new_page: NewPage, world: World, watch: Watch, neighbour: str, what: str
) -> None:
    make, says = BAD_LINKS[what]
    name, token = make(world, neighbour)
    page = new_page()
    url = link(world, name, token)
    refused(page, watch, url)
    assert page.url == url  # no redirect to the clean URL: nothing was let in
    message = page.locator("#problem-message")
    expect(message).to_contain_text(f"This link does not open the sandbox '{name}'")
    expect(message).to_contain_text(says)
    assert view_cookies(page) == []
    refused(page, watch, f"{world.server.url}/s/{name}")  # the clean URL stays closed too
    expect(page.locator("#name")).to_have_count(0)


def test_a_good_link_still_opens_after_a_bad_one(
    new_page: NewPage, world: World, watch: Watch
) -> None:
    """The control for the test above: the same browser context opens the real link."""
    page = new_page()
    refused(page, watch, link(world, "pr-7", tampered(cap(world, "pr-7"))))
    answer = page.goto(world.link("pr-7"))
    assert answer is not None and answer.status == 200
    assert page.url == f"{world.server.url}/s/pr-7"
    expect(page.locator("#name")).to_have_text("pr-7")
    (cookie,) = view_cookies(page)
    assert cookie["value"] == cap(world, "pr-7") and cookie["path"] == "/s/pr-7"
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"


def fetch(page: Page, path: str) -> tuple[int, str]:
    """`fetch(path)` from the page's own script context: (its status, the Cookie it sent)."""
    with page.expect_request(lambda r: r.url.endswith(path)) as sent:
        status = page.evaluate("async path => (await fetch(path)).status", path)
    return status, sent.value.all_headers().get("cookie", "")


def test_the_page_cookie_opens_no_v1_call(open_page: OpenPage, world: World, watch: Watch) -> None:
    page = open_page("pr-7")
    expect(page.locator("#live-status")).to_have_text("Live.")
    paths = ["/v1/sandboxes", "/v1/sandboxes/pr-7"]
    for path in paths:
        status, cookie = fetch(page, path)
        assert status == 401, path
        assert VIEW_COOKIE not in cookie  # the browser keeps it to the page's path
        answered(watch, world.server.url + path, 401)
    # Even sent along (a cookie of the same value for the whole site): no /v1 call opens.
    page.context.add_cookies(
        [{"name": VIEW_COOKIE, "value": cap(world, "pr-7"), "url": world.server.url}]
    )
    for path in paths:
        status, cookie = fetch(page, path)
        assert status == 401, path
        assert f"{VIEW_COOKIE}={cap(world, 'pr-7')}" in cookie
        answered(watch, world.server.url + path, 401)
    assert world.api.get("/v1/sandboxes/pr-7").status_code == 200  # the control: a bearer token


def test_a_signed_in_session_opens_no_v1_call_either(
    new_page: NewPage, world: World, watch: Watch
) -> None:
    page = sign_in(new_page(), world, world.server.token)
    for path in ("/v1/sandboxes", "/v1/sandboxes/pr-7"):
        status, cookie = fetch(page, path)
        assert status == 401, path
        assert SESSION_COOKIE in cookie
        answered(watch, world.server.url + path, 401)


def test_the_page_cookie_opens_no_other_sandboxs_page(
    open_page: OpenPage, world: World, watch: Watch, neighbour: str
) -> None:
    page = open_page("pr-7")
    other = f"{world.server.url}/s/{neighbour}"
    with page.expect_request(other) as sent:
        refused(page, watch, other)
    assert VIEW_COOKIE not in sent.value.all_headers().get("cookie", "")
    expect(page.locator("#problem-message")).to_have_text(
        f"This browser holds no valid link to the sandbox '{neighbour}'."
    )
    expect(page.locator("#main a[href='/']")).to_be_visible()  # the way to sign in
    # Its cookie, sent to the neighbour's page all the same, opens nothing there.
    page.context.add_cookies(
        [{"name": VIEW_COOKIE, "value": cap(world, "pr-7"), "url": world.server.url}]
    )
    with page.expect_request(other) as sent:
        refused(page, watch, other)
    assert f"{VIEW_COOKIE}={cap(world, 'pr-7')}" in sent.value.all_headers()["cookie"]
    for part in ("events", "state"):
        status, _ = fetch(page, f"/s/{neighbour}/{part}")
        assert status == 403, part
        answered(watch, f"{other}/{part}", 403)
    page.goto(f"{world.server.url}/s/pr-7")  # the control: its own page still opens
    expect(page.locator("#name")).to_have_text("pr-7")


def make_token(world: World, name: str, label: str = ACME) -> str:
    return world.server.scoped_token(name, label)


def sign_in(page: Page, world: World, token: str) -> Page:
    """Sign in with `token` on `GET /`, with the form, as a person does."""
    page.goto(f"{world.server.url}/")
    expect(page.locator("h1")).to_have_text("Sign in")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("h1")).to_have_text("Sandboxes")
    assert page.url == f"{world.server.url}/"
    return page


def listed(page: Page) -> list[str]:
    rows = page.locator("#sandboxes tr[data-sandbox]")
    return [str(rows.nth(i).get_attribute("data-sandbox")) for i in range(rows.count())]


def names(world: World, repo: str | None = None) -> list[str]:
    """The live sandboxes the API lists (of `repo`), by name."""
    items = world.api.get("/v1/sandboxes").json()["items"]
    return sorted(
        s["name"] for s in items if repo is None or s["labels"].get("github.repo") == repo
    )


def test_a_scoped_token_lists_only_its_repositorys_sandboxes(
    new_page: NewPage, world: World, watch: Watch, neighbour: str, elsewhere: str
) -> None:
    name = f"acme-{uuid.uuid4().hex[:6]}"
    page = sign_in(new_page(), world, make_token(world, name))
    expect(page.locator("#viewer")).to_have_text(name)
    expect(page.locator("#main")).to_contain_text(f"sandboxes labelled {ACME}")
    shown = listed(page)
    assert sorted(shown) == names(world, "acme/agents")
    assert {"pr-7", neighbour} <= set(shown) and elsewhere not in shown
    page.locator(f'#sandboxes a[href="/s/{neighbour}"]').click()
    expect(page.locator("#name")).to_have_text(neighbour)  # its session opens those pages
    refused(page, watch, f"{world.server.url}/s/{elsewhere}")  # and not another repository's
    admin = sign_in(new_page(), world, world.server.token)
    expect(admin.locator("#viewer")).to_have_text("admin")
    assert sorted(listed(admin)) == names(world)
    assert elsewhere in listed(admin)


def test_signing_out_ends_the_session(new_page: NewPage, world: World, watch: Watch) -> None:
    page = sign_in(new_page(), world, world.server.token)
    page.goto(f"{world.server.url}/s/pr-7")
    expect(page.locator("#name")).to_have_text("pr-7")  # the session opens any page
    page.goto(f"{world.server.url}/")
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("h1")).to_have_text("Sign in")
    assert [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE] == []
    refused(page, watch, f"{world.server.url}/s/pr-7")


def test_a_token_that_cannot_sign_in_gets_the_form_again(
    new_page: NewPage, world: World, watch: Watch
) -> None:
    page = new_page()
    page.goto(f"{world.server.url}/")
    page.get_by_label("Token").fill(f"not-a-token {XSS}")
    with page.expect_response(f"{world.server.url}/signin") as posted:
        page.get_by_role("button", name="Sign in").click()
    assert posted.value.status == 403
    answered(watch, f"{world.server.url}/signin", 403)
    expect(page.locator("#signin-error")).to_contain_text("That token cannot sign in")
    assert [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE] == []
    assert page.evaluate("window.pwned") is None


@pytest.mark.parametrize(
    "name",
    ["never-made", "NOT_A_NAME", "x" * 300, XSS],
    ids=["unknown", "invalid", "long", "html"],
)
def test_an_unknown_name_gets_the_404_page(
    new_page: NewPage, world: World, watch: Watch, name: str
) -> None:
    page = new_page()
    for url in (f"{world.server.url}/s/{quote(name)}", link(world, name, cap(world, "pr-7"))):
        shows_problem(page, page.goto(url), 404, "No such sandbox")
        answered(watch, url, 404)
        expect(page.locator("#problem-message")).to_have_text(
            f"There is no sandbox called '{name}'."
        )  # the name, HTML and all, as text
        assert page.locator("#main img").count() == 0
        assert page.evaluate("window.pwned") is None
        assert view_cookies(page) == []


MALFORMED = {
    # what: (the token, the reason the page gives)
    "huge": ("v1." + "9" * 10_000, "the link's token is malformed"),
    "not base64": (
        "v1.4102444800." + "!" * 43,  # a signature's length, not its alphabet: no match
        "the token is not valid here (altered, or for another page)",
    ),
    "empty": ("", "the link's token is malformed"),
    "html": (
        f'v1.4102444800.">{XSS}<script>window.pwned=2</script>',
        "the link's token is malformed",
    ),
    "html alone": (f"<script>window.pwned=3</script>{XSS}", "the link's token is malformed"),
}


@pytest.mark.parametrize("what", list(MALFORMED))
def test_a_huge_or_malformed_token_gets_the_403_page(
    new_page: NewPage, world: World, watch: Watch, what: str
) -> None:
    token, says = MALFORMED[what]
    page = new_page()
    url = link(world, "pr-7", token)
    assert f"view={quote(token, safe='')}" in url and len(url) > len(token)
    refused(page, watch, url)
    expect(page.locator("#problem-message")).to_have_text(
        f"This link does not open the sandbox 'pr-7': {says}."
    )
    assert page.locator("#main img, #main script").count() == 0
    assert page.evaluate("window.pwned") is None
    assert view_cookies(page) == []
