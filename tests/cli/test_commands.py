"""Every command against a real `sandboxd serve` with real fork processes, as a user runs it."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import Result

from tests.cli.conftest import Catalog, Invoke
from tests.cli.helpers import (
    EXIT_AT_ONCE,
    NEVER_HEALTHY,
    SERVE,
    as_user,
    names,
    stored,
    write_spec,
)
from tests.support import poll
from tests.support.server import Sandboxd


@pytest.fixture(scope="module")
def web(server: Sandboxd, tmp_path_factory: pytest.TempPathFactory) -> Result:
    """`sandbox up` of one sandbox `web` forking echo with a real http.server, shared by tests."""
    spec = write_spec(tmp_path_factory.mktemp("web") / "spec.yaml", command=SERVE)
    return as_user(server, "up", "-f", spec, "--name", "web", "--label", "suite=cli")


def test_up_waits_until_ready_and_prints_how_to_reach_the_sandbox(
    web: Result, server: Sandboxd, catalog: Catalog
) -> None:
    sandbox = stored(server, "web")

    assert web.exit_code == 0, web.output
    assert sandbox["phase"] == "Ready"
    lines = web.stdout.splitlines()
    assert f"baggage: {sandbox['baggage']}" in lines
    curl = f"curl -H 'baggage: {sandbox['baggage']}' http://127.0.0.1:{catalog.router_port}/"
    assert curl in lines
    assert sandbox["routingKey"] in web.stdout
    assert sandbox["links"]["self"] in web.stdout
    assert "web: Ready" in web.stderr


def test_up_again_with_the_same_spec_returns_the_same_sandbox(
    web: Result, server: Sandboxd, sandbox: Invoke, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", command=SERVE)

    again = sandbox("up", "-f", spec, "--name", "web", "--label", "suite=cli", "-o", "json")

    assert again.exit_code == 0, again.output
    body = json.loads(again.stdout)
    assert body["routingKey"] == stored(server, "web")["routingKey"]
    assert body["phase"] == "Ready"


def test_up_with_yaml_output_prints_only_the_sandbox_object(
    server: Sandboxd, sandbox: Invoke, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", command=SERVE, name="web-yaml")

    result = sandbox("up", "-f", spec, "-o", "yaml")

    assert result.exit_code == 0, result.output
    body = yaml.safe_load(result.stdout)
    assert body == stored(server, "web-yaml") | {"updatedAt": body["updatedAt"]}
    assert body["phase"] == "Ready"


def test_up_with_another_spec_updates_the_sandbox_in_place(
    server: Sandboxd, sandbox: Invoke, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", command=SERVE, name="pushed")
    first = sandbox("up", "-f", spec, "--ttl", "1h", "-o", "json")
    assert first.exit_code == 0, first.output
    before = json.loads(first.stdout)

    result = sandbox("up", "-f", spec, "--ttl", "3h", "--env", "echo:GREETING=v2", "-o", "json")

    assert result.exit_code == 0, result.output
    after = json.loads(result.stdout)
    assert after["phase"] == "Ready"  # waited for the replaced fork
    assert (after["routingKey"], after["uid"]) == (before["routingKey"], before["uid"])
    assert after["forks"][0]["pid"] != before["forks"][0]["pid"]
    assert stored(server, "pushed")["spec"]["ttl"] == "3h"
    assert stored(server, "pushed")["spec"]["forks"][0]["env"] == {"GREETING": "v2"}


def test_up_create_only_with_the_same_name_and_another_spec_exits_7(
    server: Sandboxd, sandbox: Invoke
) -> None:
    assert sandbox("up", "--name", "taken", "--ttl", "1h", "--no-wait").exit_code == 0

    result = sandbox("up", "--name", "taken", "--ttl", "3h", "--create-only")

    assert result.exit_code == 7
    assert "another spec" in result.stderr
    assert stored(server, "taken")["spec"]["ttl"] == "1h"


def test_an_invalid_name_exits_2_and_creates_nothing(server: Sandboxd, sandbox: Invoke) -> None:
    before = names(server)

    result = sandbox("up", "--name", "Not_A_Label")

    assert result.exit_code == 2
    assert "name: 'Not_A_Label' is not a valid sandbox name" in result.stderr
    assert names(server) == before


def test_an_unknown_service_exits_2(server: Sandboxd, sandbox: Invoke) -> None:
    result = sandbox("up", "--name", "ghost", "--fork", "no-such-service")

    assert result.exit_code == 2
    assert "no-such-service" in result.stderr
    assert stored(server, "ghost") == {}


def test_a_fork_that_exits_at_once_fails_up_with_exit_1(sandbox: Invoke, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", command=EXIT_AT_ONCE, name="crashes")

    result = sandbox("up", "-f", spec, "--timeout", "60")

    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert any(line.startswith("sandbox: sandbox crashes failed: ") for line in lines)
    assert any(line.startswith("  fork echo: ") for line in lines)


def test_a_fork_that_never_gets_healthy_times_out_with_exit_3(
    server: Sandboxd, sandbox: Invoke, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", command=NEVER_HEALTHY, name="slow")
    started = time.monotonic()

    result = sandbox("up", "-f", spec, "--timeout", "1")

    assert result.exit_code == 3, result.output
    assert time.monotonic() - started < 10
    assert "sandbox slow is not Ready after 1s" in result.stderr
    assert stored(server, "slow")["phase"] in {"Pending", "Provisioning"}
    assert sandbox("down", "slow").exit_code == 0


def test_list_filters_by_label(sandbox: Invoke) -> None:
    for name, team in (("team-a", "a"), ("team-b", "b")):
        assert sandbox("up", "--name", name, "--label", f"team={team}", "--no-wait").exit_code == 0

    table = sandbox("list", "--label", "team=a")
    listing = sandbox("list", "--label", "team=a", "--label", "other=x", "-o", "json")

    assert table.exit_code == 0
    rows = [line.split()[0] for line in table.stdout.splitlines()]
    assert rows == ["NAME", "team-a"]
    assert json.loads(listing.stdout) == {"items": []}


def test_get_shows_the_sandbox(web: Result, server: Sandboxd, sandbox: Invoke) -> None:
    result = sandbox("get", "web")
    sandbox_now = stored(server, "web")

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    spaced = [" ".join(line.split()) for line in lines]  # (the column's width varies)
    assert f"Routing key: {sandbox_now['routingKey']}" in spaced
    assert "Phase: Ready" in spaced
    assert f"Preview (echo): {sandbox_now['links']['preview:echo']}" in spaced
    upstream = sandbox_now["forks"][0]["upstream"]
    assert any(line.split()[:3] == ["echo", "Ready", upstream] for line in lines)


def test_get_of_an_unknown_sandbox_exits_6(sandbox: Invoke) -> None:
    result = sandbox("get", "no-such")

    assert result.exit_code == 6
    assert result.stderr.strip() == "sandbox: sandbox no-such not found"


def test_extend_moves_the_expiry(server: Sandboxd, sandbox: Invoke) -> None:
    assert sandbox("up", "--name", "short", "--ttl", "1h", "--no-wait").exit_code == 0
    before = stored(server, "short")["expiresAt"]

    result = sandbox("extend", "short", "--ttl", "4h")

    after = stored(server, "short")["expiresAt"]
    assert result.exit_code == 0
    assert after > before
    assert "(in 3h59m)" in result.stdout or "(in 4h)" in result.stdout


def test_events_list_the_way_from_created_to_ready(web: Result, sandbox: Invoke) -> None:
    result = sandbox("events", "web")

    assert result.exit_code == 0
    reasons = [line.split()[2] for line in result.stdout.splitlines()[1:]]
    assert reasons[0] == "Created"
    assert "ForksReady" in reasons


def fork_upstream(server: Sandboxd, name: str) -> str:
    return str(stored(server, name)["forks"][0]["upstream"])


def test_logs_show_the_forks_output(web: Result, server: Sandboxd, sandbox: Invoke) -> None:
    httpx.get(f"{fork_upstream(server, 'web')}/marker-for-logs", timeout=5)

    result = poll.until(
        lambda: (
            (r := sandbox("logs", "web", "echo")).exit_code == 0
            and "/marker-for-logs" in r.stdout
            and r
        ),
        timeout=10,
        what="the marker in `sandbox logs`",
    )

    assert '"GET /marker-for-logs HTTP/1.1" 404' in result.stdout


def test_logs_follow_prints_new_lines_until_ctrl_c(
    web: Result, server: Sandboxd, tmp_path: Path
) -> None:
    out = tmp_path / "follow.out"
    script = Path(sys.executable).with_name("sandbox")
    env = {"SANDBOXD_URL": server.url, "SANDBOXD_TOKEN": server.token, "PATH": "/usr/bin:/bin"}
    with out.open("wb") as stdout:
        follower = subprocess.Popen(
            [str(script), "logs", "web", "echo", "-F", "--tail", "1"],
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
            # Ctrl-C as in a terminal, whatever this run inherited (a run started in the
            # background by a shell has SIGINT ignored, and so would the follower)
            preexec_fn=_sigint_default,
        )
    try:
        poll.until(lambda: out.stat().st_size > 0, timeout=10, what="the follower's first line")
        httpx.get(f"{fork_upstream(server, 'web')}/marker-for-follow", timeout=5)
        poll.until(lambda: b"/marker-for-follow" in out.read_bytes(), timeout=10, what="the marker")
    finally:
        follower.send_signal(signal.SIGINT)
        try:
            _, stderr = follower.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            follower.kill()  # (not left running, nor its pipe open, for the tests after)
            follower.communicate()
            raise

    assert follower.returncode == 0
    assert b"Traceback" not in stderr


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_logs_of_an_unknown_fork_exit_6(web: Result, sandbox: Invoke) -> None:
    result = sandbox("logs", "web", "tools")

    assert result.exit_code == 6
    assert "tools" in result.stderr


def test_down_waits_until_deleted(server: Sandboxd, sandbox: Invoke, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", command=SERVE, name="gone")
    assert sandbox("up", "-f", spec).exit_code == 0

    result = sandbox("down", "gone", "--wait")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "sandbox gone: deleted (phase Deleted)"
    shown = sandbox("get", "gone", "-o", "json")
    assert json.loads(shown.stdout)["phase"] == "Deleted"
    assert sandbox("down", "gone").exit_code == 0


def test_down_of_a_name_never_seen_exits_0(sandbox: Invoke) -> None:
    result = sandbox("down", "never-was")

    assert result.exit_code == 0
    assert "never-was was never created" in result.stdout


def test_a_wrong_token_exits_5(sandbox: Invoke) -> None:
    result = sandbox("list", env={"SANDBOXD_TOKEN": "wrong-token-0000000000"})

    assert result.exit_code == 5
    assert result.stderr.startswith("sandbox: not authorised: set SANDBOXD_TOKEN")


def test_in_github_actions_up_names_and_labels_the_sandbox_from_the_event(
    server: Sandboxd, tmp_path: Path
) -> None:
    event = tmp_path / "event.json"
    head = {"sha": "beef4567", "ref": "feature"}
    payload = {"action": "synchronize", "pull_request": {"number": 4242, "head": head}}
    event.write_text(json.dumps(payload))
    github = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_REPOSITORY": "acme/shop",
        "GITHUB_SHA": "cafe0123",  # (GitHub's merge commit on pull_request: not the one run)
    }

    result = as_user(server, "up", "--label", "team=agents", "-o", "json", **github)

    assert result.exit_code == 0, result.output
    name = "shop-pr-4242-" + hashlib.sha256(b"acme/shop").hexdigest()[:8]
    assert json.loads(result.stdout)["name"] == name
    assert stored(server, name)["labels"] == {
        "github.repo": "acme/shop",
        "github.pr": "4242",
        "github.sha": "beef4567",
        "team": "agents",
    }
