"""The sandbox's web page (issue 15) on a real `sandboxd serve --with-router --start-baseline`:
what it shows (parsed with html.parser, asserted on text), its headers, who may see it (view
capabilities, sessions of signed-in tokens), its refusals as pages, and its live updates as
server-sent events. The browser tier (Playwright) comes later; this is the server's side."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser
from http.cookiejar import Cookie, CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sandboxd.core.capability import mint_view
from tests.conftest import ENVSERVER, write_catalog
from tests.integration.conftest import wait_phase
from tests.support import poll
from tests.support.server import Sandboxd, running_sandboxd

pytestmark = pytest.mark.slow
VIEW_KEY = "page-test-view-key-0123456789abcdef"
ACME = "github.repo=acme/agents"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
XSS_LABEL = "<script>alert('label')</script>"
XSS_LOG = "<img src=x onerror=alert('log')> & <b>bold</b>"
# A fork that prints HTML to its log, then serves as envserver does.
NOISY_FORK = [
    sys.executable, "-c",
    f"print({XSS_LOG!r}, flush=True); import runpy, sys; sys.argv = [{ENVSERVER!r}]; "
    f"runpy.run_path({ENVSERVER!r}, run_name='__main__')",
]  # fmt: skip
VOID = {"meta", "link", "input", "br", "img", "hr"}


class Doc(HTMLParser):
    """A page as text per element id, every tag with its attributes, and all its text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.by_id: dict[str, str] = defaultdict(str)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text = ""
        self._open: list[str | None] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_data(" ")  # cells and items read apart
        found = dict(attrs)
        self.tags.append((tag, found))
        if tag not in VOID:
            self._open.append(found.get("id"))

    def handle_endtag(self, tag: str) -> None:
        self.handle_data(" ")
        if tag not in VOID:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        self.text += data
        for ident in self._open:
            if ident:
                self.by_id[ident] += data

    def __getitem__(self, ident: str) -> str:
        assert ident in self.by_id, f"no element #{ident} on the page"
        return " ".join(self.by_id[ident].split())

    def raw(self, ident: str) -> str:
        """An element's text as it is (in a `pre`), without the spaces added at tags."""
        return self.by_id[ident].strip()

    def attrs(self, tag: str, **wanted: str) -> list[dict[str, str | None]]:
        return [
            a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in wanted.items())
        ]


@dataclass
class World:
    server: Sandboxd
    api: httpx.Client
    web: httpx.Client
    sandbox: dict[str, Any]
    ports: dict[str, int]

    def cap(self, name: str) -> str:
        link = self.api.get(f"/v1/sandboxes/{name}").json()["links"]["page"]
        return parse_qs(urlsplit(link).query)["view"][0]

    def page(self, name: str, **headers: str) -> httpx.Response:
        cookie = {"Cookie": f"sandboxd-view={self.cap(name)}"}
        return self.web.get(f"/s/{name}", headers={**cookie, **headers})


def router_ports(catalog: Path) -> dict[str, int]:
    import yaml

    services = yaml.safe_load(catalog.read_text())["services"]
    return {s["name"]: s["routerPort"] for s in services}


def traffic(world: World, key: str, count: int = 6) -> None:
    for _ in range(count):
        headers = {
            "baggage": f"sandbox={key}",
            "traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
        }
        httpx.get(f"http://127.0.0.1:{world.ports['echo']}/hello", headers=headers, timeout=10)


class _Refuse(DefaultCookiePolicy):
    def set_ok(self, cookie: Cookie, request: Any) -> bool:
        return False


def _no_cookies() -> CookieJar:
    """The tests send their cookies themselves: a jar that keeps none."""
    return CookieJar(policy=_Refuse())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("page")
    catalog = write_catalog(tmp / "sandboxd.yaml")
    args = ["--with-router", "--start-baseline"]
    env = {"SANDBOXD_VIEW_KEY": VIEW_KEY}
    with (
        running_sandboxd(tmp / "data", catalog=catalog, args=args, env=env) as server,
        server.client() as api,
        httpx.Client(base_url=server.url, timeout=30, cookies=_no_cookies()) as web,
    ):
        spec = {
            "name": "pr-7",
            "labels": {"github.repo": "acme/agents", "github.pr": "7",
                       "github.sha": "0123456789abcdef0123456789abcdef01234567", "note": XSS_LABEL},
            "agent": {"promptVersion": "prompt-v3", "modelVersion": "model-2026-11",
                      "tools": {"kubectl": "1.31"}},
            "forks": [{"service": "echo", "command": NOISY_FORK}],
            "faults": [{"id": "lag", "service": "echo", "kind": "latency", "latencyMs": 1}],
        }  # fmt: skip
        assert api.post("/v1/sandboxes", json=spec).status_code == 201
        sandbox = wait_phase(api, "pr-7", "Ready")
        w = World(server, api, web, sandbox, router_ports(catalog))
        poll.until(
            lambda: (
                traffic(w, sandbox["routingKey"], 2)
                or api.get("/v1/sandboxes/pr-7/traces").json()["items"]
            ),
            timeout=30,
            what="the router's records of pr-7's requests",
        )
        poll.until(
            lambda: api.get("/v1/sandboxes/pr-7/metrics").json()["services"],
            timeout=30,
            what="pr-7's metrics",
        )
        yield w


def test_the_link_is_absolute_and_outlives_the_sandbox(world: World) -> None:
    link = world.sandbox["links"]["page"]
    assert link.startswith(f"{world.server.url}/s/pr-7?view=v1.")
    expires = int(world.cap("pr-7").split(".")[1])
    sandbox_expires = datetime.fromisoformat(world.sandbox["expiresAt"].replace("Z", "+00:00"))
    assert expires >= sandbox_expires.timestamp() + 72 * 3600 - 1  # the TTL cap after it


def test_opening_the_link_sets_a_cookie_for_this_page_only_and_cleans_the_url(
    world: World,
) -> None:
    answer = world.web.get(world.sandbox["links"]["page"].removeprefix(world.server.url))
    assert answer.status_code == 303
    assert answer.headers["location"] == "/s/pr-7"
    assert answer.headers["referrer-policy"] == "no-referrer"
    cookie = answer.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")}
    assert cookie.startswith(f"sandboxd-view={world.cap('pr-7')};")
    assert {"httponly", "path", "samesite", "max-age"} <= set(attributes)
    assert attributes["path"].strip() == "Path=/s/pr-7"
    assert attributes["samesite"].strip().lower() == "samesite=lax"
    assert int(attributes["max-age"].split("=")[1]) > 3600
    assert "secure" not in attributes  # the public URL is http here
    with httpx.Client(base_url=world.server.url, timeout=30) as browser:
        shown = browser.get(world.sandbox["links"]["page"], follow_redirects=True)
        assert shown.status_code == 200 and str(shown.url).endswith("/s/pr-7")
        assert browser.get("/s/pr-7").status_code == 200  # the cookie alone opens it


def test_the_page_shows_the_sandbox(world: World) -> None:
    answer = world.page("pr-7")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    doc = Doc(answer.text)
    sandbox = world.api.get("/v1/sandboxes/pr-7").json()
    assert doc["name"] == "pr-7"
    assert doc["phase"] == "Ready" and doc["reason"] == sandbox["reason"]
    assert doc["ready"] == "yes"
    assert doc.attrs("time", id="expires")[0]["datetime"] == sandbox["expiresAt"]
    assert doc["expires"].endswith("UTC")
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert doc.attrs("a", href=f"https://github.com/acme/agents/commit/{sha}")
    assert doc.attrs("a", href="https://github.com/acme/agents/pull/7")
    assert doc["pr"] == "acme/agents#7"
    assert doc["agent-prompt"] == "prompt-v3" and doc["agent-model"] == "model-2026-11"
    assert "kubectl" in doc["agent"] and "1.31" in doc["agent"]
    assert "github.repo acme/agents" in doc["labels"]
    assert f"note {XSS_LABEL}" in doc["labels"]


def test_the_page_shows_its_forks_with_their_logs(world: World) -> None:
    doc = Doc(world.page("pr-7").text)
    fork = world.api.get("/v1/sandboxes/pr-7").json()["forks"][0]
    assert "Ready" in doc["fork-echo"]
    assert fork["upstream"] in doc["fork-echo"]
    assert XSS_LOG in doc["fork-echo"]  # the log's first line, as text


def test_the_page_says_how_to_reach_each_service_with_lines_to_copy(world: World) -> None:
    doc = Doc(world.page("pr-7").text)
    key = world.sandbox["routingKey"]
    assert doc["routing-key"] == key
    assert doc["baggage"] == f"baggage: sandbox={key}"
    services = {s["name"]: s for s in world.api.get("/v1/services").json()["items"]}
    copied = {a["data-copy"] for a in doc.attrs("button")}
    for service in services.values():
        line = f"curl -H 'baggage: sandbox={key}' {service['routerUrl']}/"
        assert line in doc["curl-lines"]
        assert line in copied
    config = json.loads(doc.raw("mcp-config"))
    assert config["mcpServers"] == {
        "tools": {"type": "http", "url": services["tools"]["routerUrl"],
                  "headers": {"baggage": f"sandbox={key}"}}
    }  # fmt: skip
    assert doc.raw("mcp-config") in copied
    links = world.api.get("/v1/sandboxes/pr-7").json()["links"]
    previews = {a["href"] for a in doc.attrs("a", **{"class": "preview-link"})}
    assert previews == {links[f"preview:{name}"] for name in services}
    assert {key, f"baggage: sandbox={key}"} <= copied


def settled(world: World) -> tuple[Doc, dict[str, Any], list[dict[str, Any]]]:
    """The page, with the fault counts and metrics the API gives just before and after it
    (the routers' reports may still be arriving: the same on both sides, or look again)."""

    def look() -> tuple[Doc, dict[str, Any], list[dict[str, Any]]] | None:
        before = world.api.get("/v1/sandboxes/pr-7").json()["faults"][0]
        metrics = world.api.get("/v1/sandboxes/pr-7/metrics").json()["services"]
        doc = Doc(world.page("pr-7").text)
        after = world.api.get("/v1/sandboxes/pr-7").json()["faults"][0]
        again = world.api.get("/v1/sandboxes/pr-7/metrics").json()["services"]
        same = before == after and [m["sandbox"] for m in metrics] == [m["sandbox"] for m in again]
        return (doc, after, metrics) if same else None

    return poll.until(look, timeout=30, what="the page and the API to agree")


def test_the_page_shows_faults_traffic_requests_traces_and_events(world: World) -> None:
    doc, fault, metrics = settled(world)
    row = doc.attrs("tr", **{"data-fault": "lag"})
    assert row and "latency" in doc["faults"]
    assert f"{fault['matched']} {fault['injected']}" in doc["faults"]
    echo = next(m for m in metrics if m["service"] == "echo")
    assert doc.attrs("tr", **{"data-service": "echo"})
    assert f"echo {echo['sandbox']['requests']} " in doc["metrics"]
    assert doc.attrs("tr", **{"class": "request", "data-route": "sandbox"})
    assert "latency lag" in doc["requests"]  # the fault applied to the request
    assert doc.attrs("li", **{"class": "trace"})
    assert "latency lag" in doc["traces"] and "sandbox" in doc["traces"]
    assert doc.attrs("tr", **{"class": "event", "data-reason": "Created"})


def test_the_page_is_safe_to_show_what_a_pull_request_wrote(world: World) -> None:
    answer = world.page("pr-7")
    doc = Doc(answer.text)
    assert [a["src"] for _, a in doc.tags if _ == "script"] == [
        a["src"] for a in doc.attrs("script") if str(a["src"]).startswith("/static/page.js?v=")
    ]  # one script, ours
    assert not [t for t, a in doc.tags if t == "img"]
    assert "<script>alert" not in answer.text and "<img src=x" not in answer.text
    assert not [a for _, a in doc.tags if "style" in a or any(k.startswith("on") for k in a)]


def test_the_page_sends_a_strict_policy_and_works_without_javascript(world: World) -> None:
    answer = world.page("pr-7")
    assert answer.headers["content-security-policy"] == CSP
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    doc = Doc(answer.text)
    assert doc.attrs("a", id="refresh", href="/s/pr-7")
    assert not doc.attrs("meta", **{"http-equiv": "refresh"})
    assert "http" not in "".join(str(a.get("src", "")) + str(a.get("href", ""))
                                 for t, a in doc.tags if t in ("script", "link"))  # fmt: skip


@pytest.mark.parametrize(
    ("name", "kind"),
    [("page.css", "text/css"), ("page.js", "text/javascript"), ("icon.svg", "image/svg+xml")],
)
def test_the_stylesheet_and_script_are_cached_by_content(
    world: World, name: str, kind: str
) -> None:
    doc = Doc(world.page("pr-7").text)
    url = next(
        str(a.get("src") or a.get("href"))
        for t, a in doc.tags
        if str(a.get("src") or a.get("href") or "").startswith(f"/static/{name}?v=")
    )
    answer = world.web.get(url)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind)
    assert "immutable" in answer.headers["cache-control"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    again = world.web.get(f"/static/{name}", headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304
    assert world.web.get("/static/nothing.js").status_code == 404


def test_unknown_and_invalid_names_get_a_404_page(world: World) -> None:
    for path in ("/s/never-made", "/s/NOT_A_NAME", "/s/" + "x" * 300):
        answer = world.web.get(path)
        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("text/html")
        assert Doc(answer.text)["problem"] == "No such sandbox"


def test_a_deleted_sandbox_gets_a_410_page(world: World) -> None:
    world.api.post("/v1/sandboxes", json={"name": "short-lived"})
    cap = world.cap("short-lived")
    world.api.delete("/v1/sandboxes/short-lived")
    wait_phase(world.api, "short-lived", "Deleted")
    answer = world.web.get("/s/short-lived", headers={"Cookie": f"sandboxd-view={cap}"})
    assert answer.status_code == 410
    assert answer.headers["content-type"].startswith("text/html")
    assert Doc(answer.text)["problem"] == "Sandbox deleted"
    polled = world.web.get("/s/short-lived/state", headers={"Cookie": f"sandboxd-view={cap}"})
    assert polled.status_code == 200 and polled.json()["gone"] is True  # a 4xx: a console error
    assert "Deleted" in polled.json()["sections"]["status"]


def refused(answer: httpx.Response) -> bool:
    return (
        answer.status_code == 403
        and answer.headers["content-type"].startswith("text/html")
        and Doc(answer.text)["problem"] == "Not allowed"
    )


def test_bad_links_get_a_403_page(world: World) -> None:
    cap = world.cap("pr-7")
    expires, mac = cap.split(".")[1:]
    other = "A" if mac[5] != "A" else "B"
    expired = mint_view(VIEW_KEY.encode(), name="pr-7", uid=world.sandbox["uid"], expires=1000)
    for bad in (
        f"v1.{expires}.{mac[:5]}{other}{mac[6:]}",  # tampered
        f"v1.{int(expires) + 1}.{mac}",  # a longer life written in
        expired,
        "v1." + "9" * 20_000,  # huge
        "<script>",
        "",
    ):
        assert refused(world.web.get("/s/pr-7", params={"view": bad})), bad[:40]
        assert refused(world.web.get("/s/pr-7", headers={"Cookie": f"sandboxd-view={bad[:4000]}"}))
    assert refused(world.web.get("/s/pr-7"))  # no link at all


def test_a_link_opens_only_its_own_sandbox(world: World) -> None:
    world.api.post("/v1/sandboxes", json={"name": "neighbour"})
    mine = world.cap("pr-7")
    assert refused(world.web.get("/s/neighbour", params={"view": mine}))
    assert refused(world.web.get("/s/neighbour", headers={"Cookie": f"sandboxd-view={mine}"}))
    for path in ("/s/neighbour/events", "/s/neighbour/state"):
        assert world.web.get(path, headers={"Cookie": f"sandboxd-view={mine}"}).status_code == 403


def test_a_sandbox_made_again_under_the_same_name_does_not_reopen(world: World) -> None:
    world.api.post("/v1/sandboxes", json={"name": "again"})
    old = world.cap("again")
    world.api.delete("/v1/sandboxes/again")
    wait_phase(world.api, "again", "Deleted")
    assert world.api.post("/v1/sandboxes", json={"name": "again"}).status_code == 201
    assert refused(world.web.get("/s/again", params={"view": old}))
    assert world.web.get("/s/again", params={"view": world.cap("again")}).status_code == 303


def test_the_page_cookie_and_a_session_open_no_v1_call(world: World) -> None:
    cap = world.cap("pr-7")
    session = sign_in(world, world.server.token).cookies["sandboxd-session"]
    for headers in (
        {"Cookie": f"sandboxd-view={cap}"},
        {"Authorization": f"Bearer {cap}"},
        {"Cookie": f"sandboxd-session={session}"},
        {"Authorization": f"Bearer {session}"},
    ):
        for path in ("/v1/sandboxes/pr-7", "/v1/sandboxes", "/v1/services"):
            assert world.web.get(path, headers=headers).status_code == 401


def sign_in(world: World, token: str, *, origin: str | None = None) -> httpx.Response:
    return world.web.post(
        "/signin",
        data={"token": token},
        headers={"Origin": origin if origin is not None else world.server.url},
    )


def make_token(world: World, name: str, label: str = ACME) -> str:
    return world.server.scoped_token(name, label)


def listed(world: World, session: str) -> list[str]:
    answer = world.web.get("/", headers={"Cookie": f"sandboxd-session={session}"})
    assert answer.status_code == 200
    return [str(a["data-sandbox"]) for a in Doc(answer.text).attrs("tr") if "data-sandbox" in a]


def test_without_a_session_the_index_is_a_sign_in_form(world: World) -> None:
    answer = world.web.get("/")
    # under no-referrer a browser's own form would post `Origin: null`, which same_site refuses
    assert answer.headers["referrer-policy"] == "same-origin"
    doc = Doc(answer.text)
    assert doc.attrs("form", id="signin", method="post", action="/signin")
    assert doc.attrs("input", name="token", type="password")


def test_a_scoped_token_sees_only_its_repository_and_stops_when_revoked(world: World) -> None:
    world.api.post("/v1/sandboxes", json={"name": "elsewhere", "labels": {"github.repo": "x/y"}})
    name = f"acme-{uuid.uuid4().hex[:6]}"
    answer = sign_in(world, make_token(world, name))
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/;" in cookie
    session = answer.cookies["sandboxd-session"]
    assert listed(world, session) == ["pr-7"]
    assert "elsewhere" in listed(
        world, sign_in(world, world.server.token).cookies["sandboxd-session"]
    )
    headers = {"Cookie": f"sandboxd-session={session}"}
    assert world.web.get("/s/pr-7", headers=headers).status_code == 200
    assert refused(world.web.get("/s/elsewhere", headers=headers))
    revoke = [sys.executable, "-m", "sandboxd", "token", "revoke", name]
    subprocess.run(revoke, env=world.server.env, check=True, capture_output=True, timeout=60)
    assert Doc(world.web.get("/", headers=headers).text).attrs("form", id="signin")
    assert refused(world.web.get("/s/pr-7", headers=headers))


def test_sign_in_refuses_other_sites_and_bad_tokens(world: World) -> None:
    assert refused(sign_in(world, world.server.token, origin="https://evil.example"))
    assert refused(sign_in(world, world.server.token, origin=""))
    router_token = (world.server.data_dir / "router-token").read_text().strip()
    for bad in ("nope", router_token, "x" * 10_000):
        answer = sign_in(world, bad)
        assert answer.status_code == 403 and "sandboxd-session" not in answer.cookies
        assert "cannot sign in" in Doc(answer.text)["signin-error"]


# live updates -------------------------------------------------------------------------------


@dataclass
class Event:
    id: str
    kind: str
    data: dict[str, Any]


def events(lines: Iterator[str]) -> Iterator[Event]:
    """The stream's events (comments skipped)."""
    fields: dict[str, str] = {}
    for line in lines:
        if line.startswith(":"):
            continue
        if line:
            key, _, value = line.partition(": ")
            fields[key] = value
            continue
        if fields:
            yield Event(fields["id"], fields["event"], json.loads(fields["data"]))
            fields = {}


@pytest.fixture
def live(world: World) -> Iterator[tuple[str, dict[str, str]]]:
    name = f"live-{uuid.uuid4().hex[:6]}"
    world.api.post("/v1/sandboxes", json={"name": name})
    wait_phase(world.api, name, "Ready")
    yield name, {"Cookie": f"sandboxd-view={world.cap(name)}"}
    world.api.delete(f"/v1/sandboxes/{name}")


def test_a_live_page_hears_a_change_and_resumes_from_its_last_id(
    world: World, live: tuple[str, dict[str, str]]
) -> None:
    name, cookie = live
    fault = {"id": "boom", "service": "echo", "kind": "http_error", "status": 503}
    with world.web.stream("GET", f"/s/{name}/events", headers=cookie) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-cache"
        assert stream.headers["x-accel-buffering"] == "no"
        heard = events(stream.iter_lines())
        first = next(heard)
        assert first.kind == "sections" and first.id == first.data["id"]
        assert "No faults" in first.data["sections"]["faults"]
        patched = world.api.patch(f"/v1/sandboxes/{name}", json={"faults": [fault]})
        assert patched.status_code == 200
        change = next(e for e in heard if "faults" in e.data["sections"])
        assert 'data-fault="boom"' in change.data["sections"]["faults"]
        assert "status" in change.data["sections"]  # the generation moved
    resumed = {**cookie, "Last-Event-ID": change.id}
    with world.web.stream("GET", f"/s/{name}/events", headers=resumed) as stream:
        again = next(events(stream.iter_lines()))
        assert again.data["sections"] == {} and again.id == change.id  # nothing missed
    older = {**cookie, "Last-Event-ID": first.id}
    with world.web.stream("GET", f"/s/{name}/events", headers=older) as stream:
        caught_up = next(events(stream.iter_lines()))
        assert 'data-fault="boom"' in caught_up.data["sections"]["faults"]
        assert "connect" not in caught_up.data["sections"]  # unchanged since the first id


def test_a_live_page_hears_its_sandbox_deleted(
    world: World, live: tuple[str, dict[str, str]]
) -> None:
    name, cookie = live
    with world.web.stream("GET", f"/s/{name}/events", headers=cookie) as stream:
        heard = events(stream.iter_lines())
        next(heard)
        world.api.delete(f"/v1/sandboxes/{name}")
        kinds = []
        for event in heard:
            kinds.append(event.kind)
            if event.kind == "gone":
                assert "Deleted" in event.data["sections"]["status"]
                break
        assert kinds[-1] == "gone"
    assert world.web.get(f"/s/{name}/events", headers=cookie).status_code == 410


def test_the_polling_fallback_answers_what_changed_as_json(
    world: World, live: tuple[str, dict[str, str]]
) -> None:
    name, cookie = live
    whole = world.web.get(f"/s/{name}/state", headers=cookie)
    assert whole.status_code == 200 and whole.headers["cache-control"] == "no-cache"
    body = whole.json()
    assert set(body["sections"]) >= {"status", "forks", "faults", "events"}
    unchanged = world.web.get(f"/s/{name}/state", params={"since": body["id"]}, headers=cookie)
    assert unchanged.json() == {"id": body["id"], "sections": {}, "gone": False}
    denied = world.web.get(f"/s/{name}/state")
    assert denied.status_code == 403 and denied.json()["error"] == "forbidden"
    assert world.web.get("/s/never-made/state").json()["error"] == "not_found"


def test_behind_https_both_cookies_are_secure(tmp_path: Path) -> None:
    public = "https://sandboxd.example"
    env = {"SANDBOXD_VIEW_KEY": VIEW_KEY, "SANDBOXD_PUBLIC_URL": public}
    with (
        running_sandboxd(tmp_path / "data", env=env) as server,
        server.client() as api,
        httpx.Client(base_url=server.url, timeout=30, cookies=_no_cookies()) as web,
    ):
        link = api.post("/v1/sandboxes", json={"name": "tls"}).json()["links"]["page"]
        assert link.startswith(f"{public}/s/tls?view=")
        opened = web.get(link.removeprefix(public))
        session = web.post("/signin", data={"token": server.token}, headers={"Origin": public})
        for answer in (opened, session):
            assert answer.status_code == 303
            assert "; secure" in answer.headers["set-cookie"].lower()


def test_a_stopping_server_ends_live_pages_cleanly(tmp_path: Path) -> None:
    env = {"SANDBOXD_VIEW_KEY": VIEW_KEY}
    with running_sandboxd(tmp_path / "data", env=env) as server, server.client() as api:
        link = api.post("/v1/sandboxes", json={"name": "watched"}).json()["links"]["page"]
        cookie = {"Cookie": f"sandboxd-view={parse_qs(urlsplit(link).query)['view'][0]}"}
        with httpx.stream("GET", f"{server.url}/s/watched/events", headers=cookie) as stream:
            lines = stream.iter_lines()
            assert next(events(lines)).kind == "sections"
            stopping = threading.Thread(target=server.stop)
            stopping.start()
            rest = list(lines)  # to the end of the body: no truncated chunk
            stopping.join()
        assert all(not line or line.startswith(":") for line in rest)
        assert server.proc is not None and server.proc.returncode in (0, -15)  # (as uvicorn stops)
