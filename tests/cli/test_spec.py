"""Building the spec `sandbox up` posts: flags, files, stdin, and their precedence."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from typer.testing import Result

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


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
name: laughs
"""


def _up(tmp_path: Path, content: str, *, name: str = "spec.yaml") -> Result:
    path = tmp_path / name
    path.write_text(content)
    return run_cli("up", "-f", str(path), env={"SANDBOXD_URL": "http://127.0.0.1:9"})


def test_a_billion_laughs_spec_is_refused_before_it_grows(tmp_path: Path) -> None:
    """353 bytes that expand to 9**9 strings: counted as they would be sent, and refused."""
    result = _up(tmp_path, BILLION_LAUGHS)

    assert len(BILLION_LAUGHS) < 400
    assert result.exit_code == 2, result.output
    assert "more than 100000 values once YAML aliases are expanded" in result.stderr
    assert "cannot reach" not in result.stderr  # refused before anything is sent


def test_a_few_aliases_are_still_a_convenience(tmp_path: Path) -> None:
    spec = read_spec_file(
        str(_write(tmp_path, "common: &env {A: '1'}\nname: x\nforks:\n"
                   "  - {service: a, env: *env}\n  - {service: b, env: *env}\n")),
        stdin=io.StringIO(),
    )  # fmt: skip

    assert spec["forks"] == [
        {"service": "a", "env": {"A": "1"}},
        {"service": "b", "env": {"A": "1"}},
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: x\nlabels: " + "[" * 1000 + "]" * 1000 + "\n", "nested more than 64 levels deep"),
        ("name: x\nlabels: " + "{a: " * 70 + "1" + "}" * 70 + "\n", "nested more than 64 levels"),
        ("name: x\nlabels: {b: !!binary aGk=}\n", "`labels.b`: a bytes value is not allowed"),
        ("name: x\nlabels: {w: !!timestamp 2024-01-01}\n", "`labels.w`: a date value is not"),
        ("name: x\nforks: [{service: a, env: {N: .nan}}]\n", "`forks[0].env.N`: nan is not a finite"),
        ("name: x\nlabels: {3: x}\n", "`labels`: key 3 is not text: quote it"),
    ],
)  # fmt: skip
def test_yaml_that_is_not_a_plain_spec_exits_2_with_where_and_why(
    tmp_path: Path, content: str, message: str
) -> None:
    result = _up(tmp_path, content)

    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert isinstance(result.exception, SystemExit)  # no traceback


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_json_nested_deeper_than_a_spec_needs_exits_2(tmp_path: Path, depth: int) -> None:
    result = _up(
        tmp_path, '{"name": "x", "labels": ' + "[" * depth + "]" * depth + "}", name="s.json"
    )

    assert result.exit_code == 2, result.output
    assert "nested more than 64 levels deep" in result.stderr


def test_a_yaml_date_stays_the_text_written() -> None:
    """`2024-01-01` in YAML 1.1 is a date, which JSON cannot carry: it is a label value here."""
    spec = read_spec_file("-", stdin=io.StringIO("name: d\nlabels: {when: 2024-01-01}\n"))

    assert spec["labels"] == {"when": "2024-01-01"}


def _write(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(content)
    return path
