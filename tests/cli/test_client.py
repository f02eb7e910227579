"""The HTTP seam: statuses and transport errors become the CLI's error tree and exit codes.

Responses come from httpx's own `MockTransport` (the library's seam) for statuses a real
sandboxd should never send; everything a real server does send is covered in test_commands.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sandboxd_cli.client import Api
from sandboxd_cli.config import Connection, resolve
from sandboxd_cli.errors import BadInput, CliError, NotAuthorised, exit_code
from tests.cli.conftest import run_cli
from tests.support.server import free_port


def api_answering(response: httpx.Response) -> Api:
    transport = httpx.MockTransport(lambda request: response)
    return Api(connection=Connection(url="http://sbx.test", token="t"), transport=transport)


def test_a_server_error_exits_1_with_the_server_message() -> None:
    api = api_answering(httpx.Response(503, json={"error": "unavailable", "message": "db down"}))

    with api, pytest.raises(CliError) as caught:
        api.get("pr-1")

    assert type(caught.value) is CliError
    assert caught.value.message == "sandboxd answered 503: db down"
    assert exit_code(caught.value) == 1


def test_a_non_json_answer_is_an_error_not_a_crash() -> None:
    api = api_answering(httpx.Response(200, text="<html>a proxy page</html>"))

    with api, pytest.raises(CliError, match="something other than JSON"):
        api.sandboxes()


def test_validation_problems_become_detail_lines_and_exit_2() -> None:
    body = {
        "error": "invalid_request",
        "message": "name: bad; forks[0].service: unknown",
        "problems": [
            {"field": "name", "problem": "bad"},
            {"field": "forks[0].service", "problem": "unknown"},
        ],
    }
    api = api_answering(httpx.Response(422, json=body))

    with api, pytest.raises(BadInput) as caught:
        api.create({"name": "x"})

    assert caught.value.details == ["name: bad", "forks[0].service: unknown"]
    assert exit_code(caught.value) == 2


def test_a_forbidden_answer_is_not_authorised() -> None:
    api = api_answering(httpx.Response(403, json={"error": "forbidden", "message": "nope"}))

    with api, pytest.raises(NotAuthorised) as caught:
        api.services()

    assert exit_code(caught.value) == 5


def test_the_token_is_sent_as_a_bearer_header() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(200, json={"items": []})

    connection = Connection(url="http://sbx.test", token="s3cret")
    with Api(connection=connection, transport=httpx.MockTransport(handler)) as api:
        api.sandboxes(labels=["a=b"])

    assert seen == ["Bearer s3cret"]


def test_connection_refused_exits_4_with_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    result = run_cli("list", env={"SANDBOXD_URL": url, "SANDBOXD_TOKEN": "t"})

    assert result.exit_code == 4
    assert result.stderr.splitlines() == [
        f"sandbox: cannot reach sandboxd at {url}: connection refused "
        "— is `sandboxd serve` running?"
    ]


def test_the_console_script_reports_connection_refused_without_a_traceback() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    script = Path(sys.executable).with_name("sandbox")

    done = subprocess.run(
        [str(script), "--url", url, "get", "pr-1"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )

    assert done.returncode == 4
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_a_url_that_is_not_http_exits_2() -> None:
    result = run_cli("list", env={"SANDBOXD_URL": "ftp://example.test"})

    assert result.exit_code == 2
    assert "SANDBOXD_URL 'ftp://example.test' is not a sandboxd URL" in result.stderr


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("foo", "the scheme must be http or https"),
        ("ftp://x", "the scheme must be http or https"),
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://127.0.0.1:99999", "Port out of range"),
        ("http://127.0.0.1:abc", "Port could not be cast"),
        ("http://:7070", "it names no host"),
        ("http://a b:7070", "spaces or control characters"),
        ("http://a\x1b[2J:7070", "spaces or control characters"),
    ],
)
def test_a_bad_url_flag_is_one_line_and_exit_2_never_a_traceback(url: str, problem: str) -> None:
    """Checked before anything is sent: the process is the real console script."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("sandbox")), "--url", url, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    assert "--url" in done.stderr and problem in done.stderr
    assert "\x1b" not in done.stderr  # the URL is echoed, escaped


@pytest.mark.parametrize("token", ["t\u00f6ken", "a b", "line\nbreak", "\u200btoken"])
def test_a_token_that_cannot_be_a_header_exits_2(token: str) -> None:
    result = run_cli("--url", f"http://127.0.0.1:{free_port()}", "--token", token, "list")

    assert result.exit_code == 2
    assert "the token must be printable ASCII" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_the_admin_token_file_is_used_only_for_a_local_url(tmp_path: Path) -> None:
    (tmp_path / "admin-token").write_text("from-file\n")
    env = {"SANDBOXD_DATA_DIR": str(tmp_path)}
    home = tmp_path / "home"

    local = resolve(url="http://localhost:7070/", token=None, env=env, home=home)
    remote = resolve(url="https://sbx.example.com", token=None, env=env, home=home)

    assert local == Connection(url="http://localhost:7070", token="from-file")
    assert remote == Connection(url="https://sbx.example.com", token=None)


def test_an_explicit_token_wins_over_the_environment_and_the_file(tmp_path: Path) -> None:
    (tmp_path / ".sandboxd").mkdir()
    (tmp_path / ".sandboxd" / "admin-token").write_text("from-file")

    env = {"SANDBOXD_TOKEN": "env"}

    assert resolve(url=None, token=None, env={}, home=tmp_path).token == "from-file"
    assert resolve(url=None, token=None, env=env, home=tmp_path).token == "env"
    assert resolve(url=None, token="flag", env=env, home=tmp_path).token == "flag"
    assert resolve(url=None, token=None, env={}, home=tmp_path).url == "http://127.0.0.1:7070"


def test_a_name_is_one_path_segment_whatever_it_contains() -> None:
    paths: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path)
        return httpx.Response(200, json={})

    connection = Connection(url="http://sbx.test", token="t")
    with Api(connection=connection, transport=httpx.MockTransport(handler)) as api:
        api.get("a/b?c=d")

    assert paths == [b"/v1/sandboxes/a%2Fb%3Fc%3Dd"]
