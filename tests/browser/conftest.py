"""The browser tier: Playwright (from PyPI) driving Debian's Chromium (`/usr/bin/chromium`,
installed by scripts/test; Playwright's own browser download cannot run here) against a real
`sandboxd serve --with-router --start-baseline` with a sandbox that has a fork, a fault and
traffic through the router.

Every page a test opens is watched for the whole test: a console error, an uncaught exception
or a request to another origin fails it (`open_page`)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from tests.conftest import fork_command, write_catalog
from tests.integration.conftest import wait_phase
from tests.support import poll
from tests.support.server import Sandboxd, running_sandboxd

CHROMIUM = os.environ.get("SANDBOXD_CHROMIUM", "/usr/bin/chromium")
# Playwright adds --headless and a fresh, empty --user-data-dir of its own to every launch. The
# rest keep Chromium off the network it would otherwise reach for at start (updates, sync,
# field trials): this machine's network is closed, and those attempts fail noisily. The resolver
# rule answers every name but 127.0.0.1 "not found" at once, so nothing ever asks DNS: a test that
# sends the browser elsewhere (a redirect off the origin) fails the same way, at once, on any
# network, and the Watch names the request.
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]  # fmt: skip
VIEW_KEY = "browser-test-view-key-0123456789abcdef"
SHA = "0123456789abcdef0123456789abcdef01234567"


def artifacts() -> Path:
    """Where screenshots go: $SANDBOXD_ARTIFACTS, else tests/browser/artifacts/ (gitignored)."""
    path = Path(os.environ.get("SANDBOXD_ARTIFACTS") or Path(__file__).parent / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One Chromium for the tier. Not session-wide: while Playwright's sync API is open it holds
    an event loop as the running one, and the async tests of later tiers cannot run their own."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM}: install the Debian package "
            "'chromium' (as root: apt-get install chromium; scripts/test does it when run as "
            "root), or set SANDBOXD_CHROMIUM to a Chromium binary",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


@dataclass
class World:
    server: Sandboxd
    api: httpx.Client
    ports: dict[str, int]

    def sandbox(self, name: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.api.get(f"/v1/sandboxes/{name}").json()
        return answer

    def link(self, name: str) -> str:
        """The page link the API gives (and the pull request's comment carries)."""
        return str(self.sandbox(name)["links"]["page"])

    def make(self, name: str, *, forks: bool | list[Any] = True, **more: Any) -> dict[str, Any]:
        """A sandbox (by default with a fork of `echo`), once Ready."""
        spec: dict[str, Any] = {"name": name, **more}
        if forks:
            default = [{"service": "echo", "command": fork_command()}]
            spec["forks"] = default if forks is True else forks
        created = self.api.post("/v1/sandboxes", json=spec)
        assert created.status_code == 201, created.text
        ready: dict[str, Any] = wait_phase(self.api, name, "Ready")
        return ready

    def traffic(self, key: str, count: int) -> None:
        for _ in range(count):
            headers = {
                "baggage": f"sandbox={key}",
                "traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
            }
            url = f"http://127.0.0.1:{self.ports['echo']}/hello"
            httpx.get(url, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """sandboxd with its router and baselines, and `pr-7`: a fork of `echo` (with its log), a
    fault, GitHub labels, an agent version, and requests through the router (so metrics,
    recent requests, traces and fault counts have something to show)."""
    import yaml

    tmp = tmp_path_factory.mktemp("browser")
    catalog = write_catalog(tmp / "sandboxd.yaml")
    ports = {s["name"]: s["routerPort"] for s in yaml.safe_load(catalog.read_text())["services"]}
    args = ["--with-router", "--start-baseline"]
    env = {"SANDBOXD_VIEW_KEY": VIEW_KEY}
    with (
        running_sandboxd(tmp / "data", catalog=catalog, args=args, env=env) as server,
        server.client() as api,
    ):
        spec = {
            "name": "pr-7",
            "labels": {"github.repo": "acme/agents", "github.pr": "7", "github.sha": SHA},
            "agent": {"promptVersion": "prompt-v3", "modelVersion": "model-2026-11",
                      "tools": {"kubectl": "1.31"}},
            "forks": [{"service": "echo", "command": fork_command()}],
            "faults": [{"id": "lag", "service": "echo", "kind": "latency", "latencyMs": 1,
                        "times": 2}],
        }  # fmt: skip
        assert api.post("/v1/sandboxes", json=spec).status_code == 201
        key = wait_phase(api, "pr-7", "Ready")["routingKey"]
        w = World(server, api, ports)
        poll.until(
            lambda: w.traffic(key, 2) or api.get("/v1/sandboxes/pr-7/traces").json()["items"],
            timeout=30,
            what="the router's records of pr-7's requests",
        )
        poll.until(  # the fault is spent after two: later requests count in the metrics
            lambda: w.traffic(key, 1) or api.get("/v1/sandboxes/pr-7/metrics").json()["services"],
            lambda services: any(m["sandbox"]["requests"] for m in services),
            timeout=30,
            what="pr-7's metrics",
        )
        poll.until(
            lambda: w.sandbox("pr-7")["faults"][0]["matched"],
            timeout=30,
            what="pr-7's fault counts from the router",
        )
        yield w


@dataclass
class Watch:
    """What the pages of one test did that they must not: console errors, uncaught
    exceptions, requests to another origin."""

    origin: str
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    pages: list[Page] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location})")

    def request(self, url: str) -> None:
        self.requests.append(url)
        if not url.startswith(self.origin + "/"):
            self.foreign.append(url)

    def new_page(self, context: BrowserContext) -> Page:
        """The one page of a new `context`, watched with its context from now on."""
        context.on("request", lambda r: self.request(r.url))
        page = context.new_page()
        page.on("console", self.console)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.pages.append(page)
        return page

    def check(self) -> None:
        assert not self.errors, "the page logged errors:\n" + "\n".join(self.errors)
        assert not self.foreign, "the page asked another origin:\n" + "\n".join(self.foreign)


OpenPage = Callable[..., Page]


@pytest.fixture
def watch(world: World) -> Watch:
    return Watch(world.server.url)


@pytest.fixture
def open_page(browser: Browser, world: World, watch: Watch) -> Iterator[OpenPage]:
    """`open_page(name, **context_options)`: a new browser context opens the sandbox's link
    (the 303 sets its view cookie) and lands on its page."""
    contexts: list[BrowserContext] = []

    def open_(name: str = "pr-7", **options: Any) -> Page:
        context = browser.new_context(**options)
        contexts.append(context)
        page = watch.new_page(context)
        answer = page.goto(world.link(name))
        assert answer is not None and answer.status == 200, answer and answer.status
        assert page.url == f"{world.server.url}/s/{name}"  # the capability left the URL
        return page

    yield open_
    for context in contexts:
        context.close()
    watch.check()
