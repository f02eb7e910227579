"""GitHub Actions defaults: the name `pr-<number>` and github.* labels, from a real event file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sandboxd_cli import github
from sandboxd_cli.errors import BadInput
from sandboxd_cli.spec import Flags, build_spec
from tests.cli.conftest import run_cli


def actions_env(tmp_path: Path, event: Any) -> dict[str, str]:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_PATH": str(path),
        "GITHUB_REPOSITORY": "acme/shop",
        "GITHUB_SHA": "0123abcd",
    }


def test_a_pull_request_event_names_and_labels_the_sandbox(tmp_path: Path) -> None:
    env = actions_env(tmp_path, {"action": "opened", "pull_request": {"number": 42}})

    defaults = github.defaults(env)

    assert defaults.name == "pr-42"
    assert defaults.labels == {
        "github.repo": "acme/shop",
        "github.pr": "42",
        "github.sha": "0123abcd",
    }


def test_the_top_level_number_is_used_without_a_pull_request_object(tmp_path: Path) -> None:
    env = actions_env(tmp_path, {"action": "closed", "number": 9})

    assert github.defaults(env).name == "pr-9"


def test_a_push_event_gives_labels_but_no_name(tmp_path: Path) -> None:
    env = actions_env(tmp_path, {"ref": "refs/heads/main"})

    defaults = github.defaults(env)

    assert defaults.name is None
    assert defaults.labels == {"github.repo": "acme/shop", "github.sha": "0123abcd"}


def test_nothing_is_implied_outside_github_actions(tmp_path: Path) -> None:
    env = actions_env(tmp_path, {"pull_request": {"number": 42}})
    env["GITHUB_ACTIONS"] = "false"

    assert github.defaults(env) == github.Defaults()


def test_explicit_name_and_labels_win_over_the_defaults(tmp_path: Path) -> None:
    env = actions_env(tmp_path, {"pull_request": {"number": 42}})
    base = {"labels": {"github.repo": "from-file"}}
    flags = Flags(name="custom", labels=["github.sha=override"])

    spec = build_spec(base=base, flags=flags, github=github.defaults(env))

    assert spec["name"] == "custom"
    assert spec["labels"] == {
        "github.repo": "from-file",
        "github.pr": "42",
        "github.sha": "override",
    }


def test_a_broken_event_file_is_an_error(tmp_path: Path) -> None:
    env = actions_env(tmp_path, {})
    Path(env["GITHUB_EVENT_PATH"]).write_text("{not json")

    with pytest.raises(BadInput, match="is not valid JSON"):
        github.defaults(env)


def test_an_event_file_nested_past_the_parser_exits_2_not_a_traceback(tmp_path: Path) -> None:
    env = actions_env(tmp_path, {})
    Path(env["GITHUB_EVENT_PATH"]).write_text("[" * 100_000)

    result = run_cli("up", env={**env, "SANDBOXD_URL": "http://127.0.0.1:9"})

    assert result.exit_code == 2, result.output
    assert "is not valid JSON" in result.stderr


def test_up_in_a_push_job_without_a_name_exits_2(tmp_path: Path) -> None:
    env = actions_env(tmp_path, {"ref": "refs/heads/main"})

    result = run_cli("up", env={**env, "SANDBOXD_URL": "http://127.0.0.1:9"})

    assert result.exit_code == 2
    assert "no sandbox name" in result.stderr
    assert "pr-<number>" in result.stderr
