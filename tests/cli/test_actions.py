"""Workflow commands and step outputs as GitHub's runner reads them, and what a run is from its
event payload."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandboxd_cli.actions import Job, command
from sandboxd_cli.errors import BadInput
from sandboxd_cli.pr_sync import read_run
from tests.support.workflow import _COMMAND, _key_values, unescape

ENV = {"GITHUB_REPOSITORY": "Acme/Agents", "GITHUB_SERVER_URL": "https://ghe.test/",
       "GITHUB_RUN_ID": "9"}  # fmt: skip


@given(st.text(), st.text())
def test_a_command_carries_any_text_on_one_line(message: str, title: str) -> None:
    line = command("error", message, title=title)
    assert "\n" not in line and "\r" not in line
    found = _COMMAND.match(line)
    assert found is not None
    name, props, text = found.groups()
    assert name == "error" and unescape(text) == message
    assert unescape(props.split("=", 1)[1], prop=True) == title


@given(st.dictionaries(st.from_regex(r"[a-z][a-z-]{0,10}", fullmatch=True), st.text()))
def test_outputs_read_back_exactly(outputs: dict[str, str]) -> None:
    # The runner reads the file by lines: a value's own line ends stay as they were, but a
    # lone CR at a line's end is not told apart from CRLF, so values here have none.
    outputs = {k: v.replace("\r", "") for k, v in outputs.items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "output"
        Job({"GITHUB_OUTPUT": str(path)}, io.StringIO()).set_outputs(outputs)
        assert _key_values(path.read_text(encoding="utf-8")) == outputs


def test_a_mask_covers_each_line_of_a_secret() -> None:
    out = io.StringIO()
    Job({}, out).mask("first\nsecond%")
    assert out.getvalue() == "::add-mask::first\n::add-mask::second%25\n"


def pull_request(action: str = "opened", **head: Any) -> dict[str, Any]:
    return {
        "action": action,
        "number": 42,
        "pull_request": {
            "number": 42,
            "updated_at": "2026-12-06T10:00:00Z",
            "head": {"sha": "ab" * 20, "repo": {"full_name": head.get("repo", "acme/agents")}},
        },
    }


def test_a_run_from_its_event() -> None:
    run = read_run(ENV, pull_request(), None)
    assert (run.command, run.number, run.head, run.from_fork) == ("up", 42, "ab" * 20, False)
    assert run.name.startswith("agents-pr-42-") and run.environment == f"sandboxd/{run.name}"
    assert run.commit_url == f"https://ghe.test/Acme/Agents/commit/{'ab' * 20}"
    assert run.run_url == "https://ghe.test/Acme/Agents/actions/runs/9"
    assert read_run(ENV, pull_request("closed"), None).command == "down"
    assert read_run(ENV, pull_request("closed"), "up").command == "up"
    assert read_run(ENV, pull_request(repo="stranger/agents"), None).from_fork


@pytest.mark.parametrize(
    ("event", "command", "says"),
    [
        ({"ref": "refs/heads/main"}, None, "pull_request event"),
        ({"pull_request": {"number": 1}}, None, "pull_request event"),
        (pull_request(), "sideways", "expected up or down"),
    ],
)
def test_a_run_that_cannot_be(event: dict[str, Any], command: str | None, says: str) -> None:
    with pytest.raises(BadInput, match=says):
        read_run({**ENV, "GITHUB_EVENT_NAME": "push"}, event, command)
