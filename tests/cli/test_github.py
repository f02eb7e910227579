"""GitHub Actions defaults: the name `<repo>-pr-<number>-<hash>` and github.* labels, from a real
event file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandboxd.core.naming import DNS_LABEL
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
    head = {"sha": "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432", "ref": "feature"}
    event = {"action": "opened", "pull_request": {"number": 42, "head": head}}
    env = actions_env(tmp_path, event)

    defaults = github.defaults(env)

    assert defaults.name == "shop-pr-42-" + hashlib.sha256(b"acme/shop").hexdigest()[:8]
    assert defaults.labels == {  # the PR's head, not GITHUB_SHA (GitHub's merge commit)
        "github.repo": "acme/shop",
        "github.pr": "42",
        "github.sha": "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432",
    }


def test_the_top_level_number_is_used_without_a_pull_request_object(tmp_path: Path) -> None:
    env = actions_env(tmp_path, {"action": "closed", "number": 9})

    defaults = github.defaults(env)
    assert defaults.name == github.pr_name("acme/shop", 9)
    assert defaults.labels["github.sha"] == "0123abcd"  # (no head in the payload)


def test_two_repositories_pr_42_get_two_names() -> None:
    names = {github.pr_name(repo, 42) for repo in ("acme/shop", "other/shop", "a/my.repo",
                                                    "a/my_repo", "a/My.Repo2")}  # fmt: skip
    assert len(names) == 5
    assert github.pr_name("Acme/Shop", 42) == github.pr_name("acme/shop", 42)  # GitHub's case


def test_a_long_repository_name_is_cut_to_40_characters_keeping_number_and_hash() -> None:
    name = github.pr_name("acme/" + "agents." * 20, 1234567)

    assert len(name) == 40
    assert name == "agents-agents-agents-pr-1234567-" + name[-8:]
    assert name[-8:] == hashlib.sha256(("acme/" + "agents." * 20).encode()).hexdigest()[:8]


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(repo=st.text(max_size=120), number=st.integers(1, 10**12))
def test_every_name_is_a_dns_label_of_at_most_40(repo: str, number: int) -> None:
    name = github.pr_name(f"owner/{repo}", number)

    assert len(name) <= 40
    assert DNS_LABEL.fullmatch(name), name
    assert f"-pr-{number}-" in name


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
    assert "<repo>-pr-<number>-<hash>" in result.stderr
