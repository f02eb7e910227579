"""The pure parts of the web page: GitHub links from labels, the lines to copy, the event ids
that let a live page resume, and the stream of events."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandboxd.web import live
from sandboxd.web.facts import Reach, curl_line, github, mcp_config
from sandboxd.web.render import SECTIONS

SECTIONS_A = {name: f"<p>{name}</p>" for name in SECTIONS}


def test_github_labels_make_links_to_the_pull_request_and_commit() -> None:
    gh = github({"github.repo": "acme/agents", "github.pr": "12", "github.sha": "abc1234"})
    assert gh.pr_url == "https://github.com/acme/agents/pull/12"
    assert gh.commit_url == "https://github.com/acme/agents/commit/abc1234"


@pytest.mark.parametrize(
    "labels",
    [
        {"github.repo": "javascript:alert(1)//x", "github.pr": "1", "github.sha": "abc1234"},
        {"github.repo": "evil.example/../x/y", "github.pr": "1"},
        {"github.repo": "acme/agents", "github.pr": "1 onclick=x", "github.sha": "zzz"},
        {"github.pr": "12", "github.sha": "abc1234"},
    ],
    ids=["scheme", "path", "bad-pr-and-sha", "no-repo"],
)
def test_odd_github_labels_make_no_link(labels: dict[str, str]) -> None:
    gh = github(labels)
    assert gh.pr_url is None and gh.commit_url is None
    assert gh.pr == labels.get("github.pr")  # still shown, as text


def test_the_curl_line_quotes_for_a_shell() -> None:
    line = curl_line("http://127.0.0.1:9000", "sandbox=abc")
    assert line == "curl -H 'baggage: sandbox=abc' http://127.0.0.1:9000/"


def test_the_mcp_configuration_names_only_mcp_services() -> None:
    reach = [
        Reach("tools", "mcp", "http://127.0.0.1:1", "curl ..."),
        Reach("web", "http", "http://127.0.0.1:2", "curl ..."),
    ]
    config = json.loads(mcp_config(reach, "sandbox=k") or "")
    assert config == {
        "mcpServers": {
            "tools": {
                "type": "http",
                "url": "http://127.0.0.1:1",
                "headers": {"baggage": "sandbox=k"},
            }
        }
    }
    assert mcp_config(reach[1:], "sandbox=k") is None


def test_an_event_id_names_what_the_client_has_so_a_resume_sends_only_the_rest() -> None:
    first = live.update(SECTIONS_A, {})
    assert first["sections"] == SECTIONS_A
    since = live.known(str(first["id"]))
    assert live.changed(SECTIONS_A, since) == {}
    later = {**SECTIONS_A, "faults": "<p>one fault</p>"}
    assert live.changed(later, since) == {"faults": "<p>one fault</p>"}


@given(st.text(max_size=300))
def test_any_last_event_id_is_understood_or_ignored(text: str) -> None:
    since = live.known(text)
    assert since == {} or set(since) == set(SECTIONS)


def test_a_huge_or_foreign_last_event_id_means_nothing_known() -> None:
    assert live.known("0" * 10_000) == {}
    assert live.known("42") == {}
    assert live.known(None) == {}


def test_events_are_one_json_line_with_an_id() -> None:
    data = live.update({"status": "<p>two\nlines</p>"}, {})
    text = live.event("sections", data).decode()
    lines = text.split("\n")
    assert lines[0] == f"id: {data['id']}" and lines[1] == "event: sections"
    assert json.loads(lines[2].removeprefix("data: ")) == data
    assert text.endswith("\n\n") and len(lines) == 5


async def test_the_stream_speaks_at_once_then_on_changes_and_ends_when_gone() -> None:
    looks = iter(
        [
            live.Seen(SECTIONS_A),
            live.Seen(SECTIONS_A),
            live.Seen({**SECTIONS_A, "status": "<p>Terminating</p>"}),
            live.Seen({**SECTIONS_A, "status": "<p>Deleted</p>"}, gone=True),
        ]
    )

    async def look() -> live.Seen:
        return next(looks)

    since = live.known(live.event_id(SECTIONS_A))
    chunks = [c async for c in live.stream(look, since, interval=0, heartbeat=3600)]
    kinds = [c.decode().split("\n")[1] for c in chunks]
    assert kinds == ["event: sections", "event: sections", "event: gone"]
    first = json.loads(chunks[0].decode().split("\n")[2].removeprefix("data: "))
    assert first["sections"] == {}  # the client had it all: an empty first event
    second = json.loads(chunks[1].decode().split("\n")[2].removeprefix("data: "))
    assert second["sections"] == {"status": "<p>Terminating</p>"}


async def test_a_quiet_stream_sends_heartbeats_and_a_refused_viewer_ends_it() -> None:
    looks = iter([live.Seen(SECTIONS_A), live.Seen(SECTIONS_A), live.Seen(None)])

    async def look() -> live.Seen:
        return next(looks)

    chunks = [c async for c in live.stream(look, {}, interval=0, heartbeat=0)]
    assert chunks[1:] == [b": ping\n\n"]


async def test_viewers_of_one_sandbox_share_a_fresh_look() -> None:
    made = []

    async def make() -> live.Seen:
        made.append(1)
        return live.Seen(SECTIONS_A)

    shared = live.Shared(fresh=3600)
    assert (await shared.look("a/1", make)).sections == SECTIONS_A
    await shared.look("a/1", make)
    assert len(made) == 1
    await shared.look("b/1", make)  # another sandbox: its own look
    assert len(made) == 2
    stale = live.Shared(fresh=0)
    await stale.look("a/1", make)
    await stale.look("a/1", make)
    assert len(made) == 4


def test_an_unexpected_error_on_a_page_is_a_500_page_not_json() -> None:
    """The page routes' guard: the API's own refusals pass through, anything else is a plain
    HTML page (the traceback goes to the log)."""
    from fastapi import APIRouter, FastAPI
    from fastapi.testclient import TestClient

    from sandboxd.web.routes import PageRoute, Web

    app = FastAPI()
    app.state.web = Web()
    pages = APIRouter(route_class=PageRoute)

    @pages.get("/boom")
    async def boom() -> str:
        raise RuntimeError("a bug")

    @pages.get("/n/{count}")
    async def typed(count: int) -> int:
        return count

    app.include_router(pages)
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/boom")
        assert answer.status_code == 500
        assert answer.headers["content-type"].startswith("text/html")
        assert "Something went wrong" in answer.text and "a bug" not in answer.text
        assert client.get("/n/x").status_code == 422  # not swallowed
        assert client.get("/n/3").json() == 3
