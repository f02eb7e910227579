"""Preview links end to end (issue 15): `sandbox preview` against a real sandboxd and its
router; the route table carries the token; deleting the sandbox revokes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import fork_command
from tests.integration.conftest import wait_phase
from tests.integration.test_with_router import embedded
from tests.support import poll

pytestmark = pytest.mark.slow
SANDBOX_CLI = str(Path(sys.executable).parent / "sandbox")


def served_by(client: httpx.Client, url: str) -> str:
    return str(client.get(url, timeout=5).json()["env"]["SANDBOXD_SANDBOX"])


def test_a_preview_link_opens_the_fork_until_the_sandbox_is_deleted(tmp_path: Path) -> None:
    with embedded(tmp_path) as (server, router), server.client() as c:
        c.post("/v1/sandboxes", json={"name": "pr-7", "forks": [{"service": "echo", "command": fork_command()}]})  # fmt: skip
        body = wait_phase(c, "pr-7", "Ready")
        env = {**os.environ, "SANDBOXD_URL": server.url, "SANDBOXD_TOKEN": server.token}
        cli = [_sandbox(), "preview", "pr-7", "echo", "--next", "/page?x=1", "-o", "json"]
        shown = json.loads(subprocess.run(cli, env=env, capture_output=True, check=True).stdout)
        url = shown["url"]
        token = url.split("/.sandboxd/preview/", 1)[1].split("?", 1)[0]
        assert url == f"{router}.sandboxd/preview/{token}?next=/page%3Fx%3D1"
        assert body["links"]["preview:echo"].startswith(url.split("?")[0])
        assert token not in (body["routingKey"], body["uid"])  # not the routing key
        routes = c.get("/v1/routes").json()["routes"]
        assert routes[body["routingKey"]]["preview"] == token

        with httpx.Client(follow_redirects=True) as browser:
            assert poll.until(lambda: _try(lambda: served_by(browser, url)), lambda s: s == "pr-7", timeout=20)  # fmt: skip
            assert served_by(browser, f"{router}other") == "pr-7"
            with httpx.Client() as stranger:
                assert served_by(stranger, router) == ""  # the baseline

            assert c.delete("/v1/sandboxes/pr-7").status_code == 202
            wait_phase(c, "pr-7", "Deleted")
            home = router
            assert poll.until(lambda: _try(lambda: served_by(browser, home)), lambda s: s == "", timeout=20) == ""  # fmt: skip
            assert "sandboxd-preview" not in browser.cookies  # cleared by the router
            again = browser.get(url, timeout=5)  # the old link: revoked, the baseline
            assert again.json()["env"]["SANDBOXD_SANDBOX"] == ""
        assert token not in json.dumps(c.get("/v1/routes").json())
        missing = subprocess.run([_sandbox(), "preview", "pr-7", "echo"], env=env, capture_output=True, text=True)  # fmt: skip
        assert missing.returncode != 0 and "no preview links" in missing.stderr


def _sandbox() -> str:
    return SANDBOX_CLI if Path(SANDBOX_CLI).exists() else "sandbox"


def _try(call):  # type: ignore[no-untyped-def]
    try:
        return call()
    except (httpx.HTTPError, KeyError, ValueError):
        return None
