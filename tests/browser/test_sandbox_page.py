"""The sandbox's page (`GET /s/{name}`, issue 15) in a real browser: what it shows, its live
updates without a reload, the countdown, the copy buttons, a phone's width, JavaScript off, and
axe-core's accessibility rules. The server's side is tests/integration/test_page.py.

The live-update tests wait for a change with a deadline of 3 s (Playwright's `expect(...,
timeout=)`): the issue asks that the page be at most 2 s behind, and a waiting browser is how
that is observed; the deadline is the requirement, not a speed measurement."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser import axe
from tests.browser.conftest import SHA, OpenPage, Watch, World, artifacts
from tests.conftest import ENVSERVER

pytestmark = pytest.mark.slow
LIVE = 3000  # ms: the "at most 2 s behind", with room for the change to happen
COUNTDOWN = re.compile(r"^\((\d+d )?(\d+h )?\d+m \d+s left\)$")
XSS_LABEL = "<script>window.pwned = 'label'</script>"
XSS_LOG = "<img src=x onerror=\"window.pwned = 'log'\"> & <b>bold</b>"
# A fork that prints HTML to its log, then serves as envserver does.
NOISY_FORK = [
    sys.executable, "-c",
    f"print({XSS_LOG!r}, flush=True); import runpy, sys; sys.argv = [{ENVSERVER!r}]; "
    f"runpy.run_path({ENVSERVER!r}, run_name='__main__')",
]  # fmt: skip


def expected_copies(world: World, name: str) -> dict[str, str]:
    """What each copy button must put on the clipboard, from the API (not from the page)."""
    key = world.sandbox(name)["routingKey"]
    services = {s["name"]: s for s in world.api.get("/v1/services").json()["items"]}
    copies = {"routing key": key, "baggage": f"baggage: sandbox={key}"}
    for service in services.values():
        copies[f"curl {service['name']}"] = (
            f"curl -H 'baggage: sandbox={key}' {service['routerUrl']}/"
        )
    return copies


def shows_everything(page: Page, world: World, *, live: bool) -> None:
    """Each item of the page, as a person sees it (visible text and data attributes)."""
    sandbox = world.sandbox("pr-7")
    key = sandbox["routingKey"]
    expect(page.locator("#name")).to_have_text("pr-7")
    expect(page.locator("#phase")).to_have_text("Ready")
    expect(page.locator("#phase")).to_have_attribute("data-phase", "Ready")
    expect(page.locator("#reason")).to_have_text(sandbox["reason"])
    expect(page.locator("#ready")).to_have_text("yes")
    expect(page.locator("#commit a")).to_have_attribute(
        "href", f"https://github.com/acme/agents/commit/{SHA}"
    )
    expect(page.locator("#pr a")).to_have_text("acme/agents#7")
    expect(page.locator("#agent-model")).to_have_text("model-2026-11")
    expect(page.locator('#labels tr[data-label="github.pr"] td')).to_have_text("7")
    # its fork, with its phase, upstream and log
    fork = page.locator('article[data-fork="echo"]')
    expect(fork.locator(".fork-phase")).to_have_text("Ready (ready)")
    expect(fork.locator(".fork-upstream")).to_have_text(sandbox["forks"][0]["upstream"])
    expect(fork.locator(".fork-log")).to_be_visible()
    # how to reach it
    expect(page.locator("#routing-key")).to_have_text(key)
    expect(page.locator("#baggage")).to_have_text(f"baggage: sandbox={key}")
    copies = expected_copies(world, "pr-7")
    for service in ("echo", "tools"):
        curl = page.locator(f'#curl-lines li[data-service="{service}"] .curl')
        expect(curl).to_have_text(copies[f"curl {service}"])
    config = json.loads(page.locator("#mcp-config").inner_text())
    assert config["mcpServers"]["tools"]["headers"] == {"baggage": f"sandbox={key}"}
    # faults with their counts, traffic beside the baseline, requests, traces, events
    fault = page.locator('#faults tr[data-fault="lag"]')
    expect(fault).to_be_visible()
    expect(fault.locator(".matched")).to_have_text(re.compile(r"^[1-9]\d*$"))
    expect(fault.locator(".injected")).to_have_text(re.compile(r"^[1-9]\d*$"))
    metrics = page.locator('#metrics tr[data-service="echo"]')
    expect(metrics.locator(".requests")).to_have_text(re.compile(r"^[1-9]\d*$"))
    expect(metrics.locator(".p99")).to_have_text(re.compile(r" ms$"))
    expect(metrics.locator(".baseline-requests")).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator('#requests tr.request[data-route="sandbox"]').first).to_be_visible()
    faulted = page.locator("#requests .fault").filter(has_text=re.compile(r"^latency lag$"))
    expect(faulted.first).to_be_visible()  # a request the fault was applied to
    expect(page.locator("#traces li.trace").first).to_be_visible()
    expect(page.locator('#events tr.event[data-reason="Created"]')).to_be_visible()
    # the expiry: the absolute time always, a live countdown with JavaScript
    expect(page.locator("#expires")).to_have_attribute("datetime", sandbox["expiresAt"])
    expect(page.locator("#expires")).to_have_text(
        re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")
    )
    buttons = page.locator("button.copy")
    assert buttons.count() == len(copies) + 1  # and the MCP configuration's
    if live:
        expect(page.locator("#countdown")).to_have_text(COUNTDOWN)
        expect(page.locator("#live-status")).to_have_text("Live.")
        for i in range(buttons.count()):
            expect(buttons.nth(i)).to_be_visible()
    else:
        expect(page.locator("#countdown")).to_have_text("")
        for i in range(buttons.count()):
            expect(buttons.nth(i)).to_be_hidden()  # a button that cannot work is not shown


def test_the_page_shows_each_item(open_page: OpenPage, world: World) -> None:
    shows_everything(open_page(), world, live=True)


def test_a_killed_fork_shows_on_screen_without_a_reload(open_page: OpenPage, world: World) -> None:
    sandbox = world.make("kill-fork")
    page = open_page("kill-fork")
    expect(page.locator("#live-status")).to_have_text("Live.")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    os.kill(sandbox["forks"][0]["pid"], signal.SIGKILL)
    expect(page.locator("#phase")).to_have_text("Failed", timeout=LIVE)
    expect(page.locator('article[data-fork="echo"] .fork-phase')).to_have_text("Exited")
    assert page.evaluate("window.sameDocument") is True


def test_an_added_fault_shows_on_screen_without_a_reload(open_page: OpenPage, world: World) -> None:
    world.make("add-fault", forks=False)
    page = open_page("add-fault")
    expect(page.locator("#live-status")).to_have_text("Live.")
    expect(page.locator("#no-faults")).to_be_visible()
    page.evaluate("window.sameDocument = true")
    fault = {"id": "boom", "service": "echo", "kind": "http_error", "status": 503}
    patched = world.api.patch("/v1/sandboxes/add-fault", json={"faults": [fault]})
    assert patched.status_code == 200, patched.text
    row = page.locator('#faults tr[data-fault="boom"]')
    expect(row).to_be_visible(timeout=LIVE)
    expect(row).to_contain_text("http_error")
    assert page.evaluate("window.sameDocument") is True


def test_a_deleted_sandbox_shows_as_gone_without_a_reload(
    open_page: OpenPage, world: World
) -> None:
    world.make("delete-me")
    page = open_page("delete-me")
    expect(page.locator("#live-status")).to_have_text("Live.")
    page.evaluate("window.sameDocument = true")
    assert world.api.delete("/v1/sandboxes/delete-me").status_code in (200, 202, 204)
    expect(page.locator("#live-status")).to_have_text("This sandbox was deleted.", timeout=LIVE)
    expect(page.locator("#phase")).to_have_text("Deleted")
    expect(page.locator("body")).to_have_attribute("data-gone", "true")
    assert page.evaluate("window.sameDocument") is True


def test_the_countdown_ticks(open_page: OpenPage) -> None:
    countdown = open_page().locator("#countdown")
    expect(countdown).to_have_text(COUNTDOWN)
    first = countdown.inner_text()
    expect(countdown).not_to_have_text(first, timeout=2000)
    expect(countdown).to_have_text(COUNTDOWN)


def test_copy_buttons_put_the_exact_text_on_the_clipboard(
    open_page: OpenPage, world: World
) -> None:
    page = open_page(permissions=["clipboard-read", "clipboard-write"])
    wanted = expected_copies(world, "pr-7")
    wanted["mcp"] = page.locator("#mcp-config").inner_text()
    json.loads(wanted["mcp"])
    copied = set()
    buttons = page.locator("button.copy")
    for i in range(buttons.count()):
        page.evaluate("navigator.clipboard.writeText('')")
        buttons.nth(i).click()
        expect(buttons.nth(i)).to_have_text("Copied")
        copied.add(page.evaluate("navigator.clipboard.readText()"))
    assert copied == set(wanted.values())


@pytest.mark.parametrize("width", [390, 1280])
def test_usable_at_a_phone_and_a_desktop_width(
    open_page: OpenPage, world: World, width: int
) -> None:
    page = open_page(viewport={"width": width, "height": 844})
    shows_everything(page, world, live=True)
    scroll_width = page.evaluate("document.scrollingElement.scrollWidth")
    assert scroll_width <= width, f"the page scrolls sideways: {scroll_width} px wide"
    for item in ("#name", "#phase", "#countdown", "#routing-key", "#baggage", "#faults",
                 'article[data-fork="echo"]', '#curl-lines li[data-service="echo"]'):  # fmt: skip
        box = page.locator(item).bounding_box()
        assert box is not None and box["width"] > 0, f"{item} is not shown"
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, f"{item} runs off: {box}"
    page.screenshot(path=artifacts() / f"sandbox-page-{width}px.png", full_page=True)


def test_without_javascript_it_shows_everything_but_the_live_updates(
    open_page: OpenPage, world: World, watch: Watch
) -> None:
    page = open_page(java_script_enabled=False)
    shows_everything(page, world, live=False)
    expect(page.locator("#live-status")).to_have_text("Shown as of loading this page.")
    refresh = page.locator("a#refresh")
    expect(refresh).to_be_visible()
    expect(refresh).to_have_attribute("href", "/s/pr-7")
    assert page.locator('meta[http-equiv="refresh" i]').count() == 0
    refresh.click()
    expect(page.locator("#phase")).to_have_text("Ready")
    assert not [url for url in watch.requests if "/events" in url or "/state" in url]


def test_axe_finds_no_serious_or_critical_violation(open_page: OpenPage) -> None:
    """axe-core is injected as a script tag of its own: the page's policy (script-src 'self')
    refuses it, so this context alone bypasses the CSP (`bypass_csp=True`)."""
    for scheme in ("light", "dark"):
        page = open_page(bypass_csp=True, color_scheme=scheme)
        expect(page.locator("#live-status")).to_have_text("Live.")
        page.add_script_tag(path=axe.script())
        results: dict[str, Any] = page.evaluate("axe.run()")
        bad = [v for v in results["violations"] if v["impact"] in ("serious", "critical")]
        for v in bad:
            print(f"[{scheme}] {v['impact']} {v['id']}: {v['help']}")
            for node in v["nodes"]:
                print("   ", node["target"], node.get("failureSummary", "").replace("\n", " "))
        assert bad == [], f"axe-core ({scheme}): " + ", ".join(v["id"] for v in bad)


def test_status_is_text_not_colour_alone(open_page: OpenPage, world: World) -> None:
    page = open_page()
    for element in (page.locator("#phase"), page.locator(".fork-phase").first):
        phase = element.get_attribute("data-phase")
        assert phase and phase in element.inner_text()  # the word, beside the coloured dot
    verdicts = page.locator("#metrics .verdict")
    for i in range(verdicts.count()):
        assert verdicts.nth(i).inner_text().strip() == verdicts.nth(i).get_attribute("data-verdict")


def test_without_server_sent_events_it_polls_and_still_follows_changes(
    open_page: OpenPage, world: World, watch: Watch
) -> None:
    """A proxy that cuts the event stream (the browser's requests for it fail here): the page
    falls back to polling `/s/<name>/state`, and a change still shows without a reload."""
    world.make("poll-me", forks=False)
    page = open_page("poll-me")
    page.context.route("**/s/poll-me/events*", lambda route: route.abort())
    page.reload()
    expect(page.locator("#live-status")).to_have_text("Updating every 2 s.", timeout=8000)
    page.evaluate("window.sameDocument = true")
    fault = {"id": "boom", "service": "echo", "kind": "http_error", "status": 503}
    assert world.api.patch("/v1/sandboxes/poll-me", json={"faults": [fault]}).status_code == 200
    expect(page.locator('#faults tr[data-fault="boom"]')).to_be_visible(timeout=LIVE)
    assert world.api.delete("/v1/sandboxes/poll-me").status_code in (200, 202, 204)
    expect(page.locator("#live-status")).to_have_text("This sandbox was deleted.", timeout=LIVE)
    expect(page.locator("#phase")).to_have_text("Deleted")
    assert page.evaluate("window.sameDocument") is True
    # the cut stream's failures are the only errors (a deleted sandbox's poll is not one)
    watch.errors[:] = [e for e in watch.errors if "/s/poll-me/events" not in e]


def test_html_from_a_pull_request_shows_as_text_and_never_runs(
    open_page: OpenPage, world: World
) -> None:
    """A label and a fork's log line carrying HTML: shown as text on the page as served and
    in the sections the live update swaps in (here, when the sandbox is deleted)."""
    fork = {"service": "echo", "command": NOISY_FORK}
    world.make("xss", labels={"note": XSS_LABEL}, forks=[fork])
    page = open_page("xss")
    expect(page.locator("#live-status")).to_have_text("Live.")

    def shown_as_text() -> None:
        expect(page.locator('#labels tr[data-label="note"] td')).to_have_text(XSS_LABEL)
        assert page.locator("#labels img, #labels script, .fork-log img, .fork-log b").count() == 0
        assert page.evaluate("window.pwned") is None

    expect(page.locator('article[data-fork="echo"] .fork-log')).to_contain_text(XSS_LOG)
    shown_as_text()
    assert world.api.delete("/v1/sandboxes/xss").status_code in (200, 202, 204)
    expect(page.locator("#live-status")).to_have_text("This sandbox was deleted.", timeout=LIVE)
    shown_as_text()
