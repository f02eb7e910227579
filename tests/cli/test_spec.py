"""Building the spec `sandbox up` posts: flags, files, stdin, and their precedence."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from sandboxd_cli.errors import BadInput
from sandboxd_cli.github import Defaults
from sandboxd_cli.spec import Flags, build_spec, parse_env, parse_label, read_spec_file
from tests.cli.conftest import run_cli

NO_GITHUB = Defaults()

SPEC_YAML = """\
name: from-file
ttl: 30m
labels: {team: agents, tier: dev}
forks:
  - service: echo
    command: [python3, -m, http.server, "${PORT}"]
    env: {GREETING: hello}
"""


def test_flags_alone_make_a_complete_spec() -> None:
    flags = Flags(
        name="pr-7",
        ttl="2h",
        forks=["echo", "tools"],
        env=["echo:GREETING=hi", "tools:MODE=a=b:c"],
        labels=["team=agents"],
    )

    spec = build_spec(base={}, flags=flags, github=NO_GITHUB)

    assert spec == {
        "name": "pr-7",
        "ttl": "2h",
        "labels": {"team": "agents"},
        "forks": [
            {"service": "echo", "env": {"GREETING": "hi"}},
            {"service": "tools", "env": {"MODE": "a=b:c"}},
        ],
    }


def test_flags_override_name_and_ttl_and_extend_labels_forks_and_env(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC_YAML)
    base = read_spec_file(str(path), stdin=io.StringIO())
    flags = Flags(
        name="pr-8",
        ttl="4h",
        forks=["echo", "tools"],
        env=["echo:EXTRA=1", "echo:GREETING=bye"],
        labels=["tier=prod", "owner=me"],
    )

    spec = build_spec(base=base, flags=flags, github=NO_GITHUB)

    assert spec["name"] == "pr-8"
    assert spec["ttl"] == "4h"
    assert spec["labels"] == {"team": "agents", "tier": "prod", "owner": "me"}
    assert spec["forks"] == [
        {
            "service": "echo",
            "command": ["python3", "-m", "http.server", "${PORT}"],
            "env": {"GREETING": "bye", "EXTRA": "1"},
        },
        {"service": "tools"},
    ]
    assert base["name"] == "from-file", "the file's spec is not modified in place"


def test_a_json_spec_is_read_as_json(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"name": "j", "forks": [{"service": "echo"}]}))

    assert read_spec_file(str(path), stdin=io.StringIO()) == {
        "name": "j",
        "forks": [{"service": "echo"}],
    }


def test_dash_reads_the_spec_from_stdin() -> None:
    assert read_spec_file("-", stdin=io.StringIO("name: piped\n")) == {"name": "piped"}


def test_an_env_flag_for_a_service_that_is_not_forked_is_an_error() -> None:
    flags = Flags(name="x", forks=["echo"], env=["tools:A=1"])

    with pytest.raises(BadInput, match="tools is not forked; add --fork tools"):
        build_spec(base={}, flags=flags, github=NO_GITHUB)


@pytest.mark.parametrize("text", ["echo", "echo:A", ":A=1", "echo:=1", "A=1"])
def test_malformed_env_flags_are_refused(text: str) -> None:
    with pytest.raises(BadInput, match="expected SERVICE:KEY=VALUE"):
        parse_env(text)


@pytest.mark.parametrize("text", ["team", "=agents", ""])
def test_malformed_label_flags_are_refused(text: str) -> None:
    with pytest.raises(BadInput, match="expected KEY=VALUE"):
        parse_label(text)


def test_a_label_value_may_be_empty_or_contain_equals() -> None:
    assert parse_label("k=") == ("k", "")
    assert parse_label("query=a=b") == ("query", "a=b")


def test_without_any_name_up_exits_2_before_contacting_anyone() -> None:
    result = run_cli("up", "--fork", "echo", env={"SANDBOXD_URL": "http://127.0.0.1:9"})

    assert result.exit_code == 2
    assert "no sandbox name" in result.stderr
    assert "cannot reach" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "x", "--env", "echo:A=1"], "echo is not forked; add --fork echo"),
        (["--name", "x", "--fork", "echo", "--env", "echo"], "expected SERVICE:KEY=VALUE"),
        (["--name", "x", "--label", "novalue"], "--label 'novalue': expected KEY=VALUE"),
    ],
)
def test_bad_flags_exit_2_with_one_clear_line(args: list[str], message: str) -> None:
    result = run_cli("up", *args, env={"SANDBOXD_URL": "http://127.0.0.1:9"})

    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: [unclosed\n", "not valid YAML or JSON"),
        ('{"name": "x",}', "not valid YAML or JSON"),
        ("- a\n- b\n", "the spec must be a mapping"),
        ("", "the spec is empty"),
        ("forks: {service: echo}\nname: x\n", "`forks` in the spec must be a list"),
    ],
)
def test_bad_spec_files_exit_2(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(content)

    result = run_cli("up", "-f", str(path), env={"SANDBOXD_URL": "http://127.0.0.1:9"})

    assert result.exit_code == 2
    assert message in result.stderr


def test_an_unreadable_spec_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("up", "-f", str(tmp_path / "missing.yaml"))

    assert result.exit_code == 2
    assert "cannot read" in result.stderr
    assert "missing.yaml" in result.stderr


def test_malformed_stdin_exits_2() -> None:
    result = run_cli("up", "-f", "-", stdin="name: [\n")

    assert result.exit_code == 2
    assert "standard input: not valid YAML or JSON" in result.stderr
