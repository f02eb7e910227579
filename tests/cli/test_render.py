"""Output: JSON/YAML exactly as the API said, tables and texts for people, relative times."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from sandboxd_cli.render import Output, dump, relative, span, table
from sandboxd_cli.views import details, event_table, progress, sandbox_list, summary, try_url
from sandboxd_cli.wait import poll, reporter

NOW = datetime(2025, 1, 2, 3, 0, 0, tzinfo=UTC)

SANDBOX: dict[str, Any] = {
    "name": "pr-42",
    "routingKey": "ab12cd34ef56gh78",
    "baggage": "sandbox=ab12cd34ef56gh78",
    "phase": "Ready",
    "reason": "ForksReady",
    "message": "all 1 forks are ready",
    "labels": {"github.pr": "42", "team": "agents"},
    "createdAt": "2025-01-02T02:59:00Z",
    "expiresAt": "2025-01-02T04:59:59.600000Z",
    "forks": [
        {"service": "tools", "phase": "Ready", "upstream": "http://127.0.0.1:4001"},
        {"service": "echo", "phase": "Starting", "upstream": None},
    ],
    "links": {"self": "http://sbx/v1/sandboxes/pr-42", "web": "http://sbx/sandboxes/pr-42"},
    "extra": {"nested": [1, "two", None]},
}

SERVICES: dict[str, Any] = {
    "baggageKey": "sandbox",
    "items": [
        {"name": "echo", "routerPort": 18001, "routerUrl": "http://127.0.0.1:18001"},
        {"name": "tools", "routerPort": 18002, "routerUrl": "http://127.0.0.1:18002"},
    ],
}


@pytest.mark.parametrize("output", [Output.JSON, Output.YAML])
def test_json_and_yaml_print_the_object_unchanged(output: Output) -> None:
    text = dump(SANDBOX, output)

    parsed = json.loads(text) if output is Output.JSON else yaml.safe_load(text)
    assert parsed == SANDBOX


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, "0s"), (45, "45s"), (90, "1m30s"), (7199, "1h59m"), (7200, "2h"), (90061, "1d1h")],
)
def test_spans_show_the_two_largest_units(seconds: int, expected: str) -> None:
    assert span(seconds) == expected


def test_relative_times_count_down_and_then_up() -> None:
    assert relative("2025-01-02T04:59:59.6Z", now=NOW) == "in 1h59m"
    assert relative("2025-01-02T02:57:00Z", now=NOW) == "3m ago"
    assert relative(None, now=NOW) == "-"
    assert relative("not a time", now=NOW) == "-"


def test_tables_align_columns() -> None:
    assert table(["A", "LONGER"], [["wide value", "x"], ["b", "y"]]).splitlines() == [
        "A            LONGER",
        "wide value   x",
        "b            y",
    ]


def test_the_list_table_has_name_phase_forks_expiry_and_labels() -> None:
    lines = sandbox_list([SANDBOX], now=NOW).splitlines()

    assert lines[0].split() == ["NAME", "PHASE", "FORKS", "EXPIRES", "LABELS"]
    assert lines[1].split() == [
        "pr-42",
        "Ready",
        "tools,echo",
        "in",
        "1h59m",
        "github.pr=42,team=agents",
    ]


def fields(text: str) -> dict[str, str]:
    """`Label:   value` lines of a details view, by label (fork rows are indented, so skipped)."""
    pairs = (line.partition(": ") for line in text.splitlines() if not line.startswith(" "))
    return {label: value.strip() for label, sep, value in pairs if sep}


def test_details_show_key_baggage_expiry_links_and_forks() -> None:
    text = details(SANDBOX, now=NOW)

    assert fields(text) == {
        "Name": "pr-42",
        "Phase": "Ready",
        "Reason": "ForksReady",
        "Message": "all 1 forks are ready",
        "Routing key": "ab12cd34ef56gh78",
        "Baggage": "sandbox=ab12cd34ef56gh78",
        "Created": "2025-01-02T02:59:00Z",
        "Expires": "2025-01-02T04:59:59Z (in 1h59m)",
        "Labels": "github.pr=42,team=agents",
        "Link (self)": "http://sbx/v1/sandboxes/pr-42",
        "Link (web)": "http://sbx/sandboxes/pr-42",
    }
    rows = [line.split() for line in text.splitlines()]
    assert ["tools", "Ready", "http://127.0.0.1:4001", "-"] in rows
    assert ["echo", "Starting", "-", "-"] in rows


def test_details_show_a_dash_for_what_the_server_did_not_send() -> None:
    shown = fields(details({"name": "bare"}, now=NOW))

    assert shown["Name"] == "bare"
    assert shown["Phase"] == shown["Expires"] == shown["Labels"] == "-"


def test_the_ready_summary_has_the_exact_header_line_and_a_curl_to_the_first_fork() -> None:
    lines = summary(SANDBOX, services=SERVICES, now=NOW).splitlines()

    assert "baggage: sandbox=ab12cd34ef56gh78" in lines
    assert "curl -H 'baggage: sandbox=ab12cd34ef56gh78' http://127.0.0.1:18002/" in lines
    assert "  link:        http://sbx/sandboxes/pr-42" in lines
    assert "  expires:     2025-01-02T04:59:59Z (in 1h59m)" in lines


def test_without_forks_the_curl_goes_to_the_first_catalog_service() -> None:
    assert try_url({"forks": []}, SERVICES) == "http://127.0.0.1:18001/"


def test_without_a_web_link_the_summary_shows_the_self_link() -> None:
    sandbox = {**SANDBOX, "links": {"self": "http://sbx/v1/sandboxes/pr-42"}}

    assert "  link:        http://sbx/v1/sandboxes/pr-42" in summary(
        sandbox, services=None, now=NOW
    )


def test_events_table_has_time_type_reason_message() -> None:
    items = [
        {"time": "2025-01-02T03:00:00.123Z", "type": "Normal", "reason": "Created", "message": "ok"}
    ]

    assert event_table(items).splitlines()[1].split() == [
        "2025-01-02T03:00:00Z",
        "Normal",
        "Created",
        "ok",
    ]


def test_progress_names_phase_reason_and_fork_states() -> None:
    assert progress(SANDBOX) == "pr-42: Ready (ForksReady) forks: tools=Ready, echo=Starting"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_poll_stops_when_done_and_reports_every_value() -> None:
    clock = FakeClock()
    values = iter(["Pending", "Provisioning", "Ready", "never read"])
    seen: list[str] = []

    last, done = poll(
        fetch=lambda: next(values),
        done=lambda v: v == "Ready",
        timeout=10,
        report=seen.append,
        clock=clock,
        sleep=clock.sleep,
    )

    assert (last, done) == ("Ready", True)
    assert seen == ["Pending", "Provisioning", "Ready"]


def test_poll_gives_up_at_the_timeout() -> None:
    clock = FakeClock()

    last, done = poll(
        fetch=lambda: clock.now,
        done=lambda _: False,
        timeout=1,
        report=lambda _: None,
        interval=0.25,
        clock=clock,
        sleep=clock.sleep,
    )

    assert done is False
    assert last == pytest.approx(1.0)
    assert clock.now == pytest.approx(1.0)


def test_without_a_terminal_progress_is_one_line_per_change(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pending = {"name": "x", "phase": "Pending"}
    with reporter(tty=False) as report:
        for state in (
            pending,
            pending,
            {**pending, "phase": "Ready"},
            {**pending, "phase": "Ready"},
        ):
            report(state)

    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["x: Pending", "x: Ready"]
    assert captured.out == ""


def test_the_spinner_shows_server_text_verbatim_not_as_markup(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Square brackets in a server's reason are text: read as markup, `[bold]` would vanish
    into a style and `[/unbalanced]` would raise."""
    # Rich draws a live spinner only on a terminal; this makes the captured stderr one, wide
    # enough that the line is not wrapped.
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "200")
    with reporter(tty=True) as report:
        report({"name": "x", "phase": "Failed", "reason": "[/unbalanced] [bold]"})

    assert "x: Failed ([/unbalanced] [bold])" in capsys.readouterr().err


HOSTILE = "\x1b]0;owned\x07\x1b[2J\x9b31m\u202eevil"


def test_server_text_cannot_drive_the_terminal_in_tables() -> None:
    """A fork's output ends up in messages, and labels are whatever was stored: escape
    sequences, C1 controls and bidirectional overrides are shown escaped, never acted on."""
    sandbox = {
        **SANDBOX,
        "message": f"fork exited: {HOSTILE}",
        "labels": {f"k{HOSTILE}": HOSTILE},
        "forks": [{"service": "echo", "phase": "Failed", "message": HOSTILE}],
    }
    events = [
        {"time": "2025-01-02T02:59:00Z", "type": "Warning", "reason": "R", "message": HOSTILE}
    ]

    for shown in (details(sandbox, now=NOW), sandbox_list([sandbox], now=NOW), event_table(events)):
        assert not any(c in shown for c in "\x1b\x07\x9b\u202e"), shown
        assert "\\x1b]0;owned\\x07" in shown and "\\u202eevil" in shown
