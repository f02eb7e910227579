"""`sandbox preview` against a real sandboxd: the link, its landing path, and clear refusals."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.cli.conftest import Catalog, Invoke
from tests.cli.helpers import stored
from tests.support.server import Sandboxd


@pytest.fixture(scope="module")
def made(server: Sandboxd) -> str:
    """A sandbox that forks nothing: its preview links exist as soon as it is live."""
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}
    ) as c:
        assert c.post("/v1/sandboxes", json={"name": "pv", "forks": []}).status_code == 201
    return "pv"


def test_preview_prints_the_services_link_landing_on_next(
    made: str, server: Sandboxd, sandbox: Invoke, catalog: Catalog
) -> None:
    link = stored(server, made)["links"]["preview:echo"]
    shown = sandbox("preview", made, "echo", "--next", "/a b?c=1")
    assert shown.exit_code == 0, shown.output
    url = shown.stdout.strip()
    assert url == link.split("?")[0] + "?next=/a%20b%3Fc%3D1"
    assert url.startswith(f"http://127.0.0.1:{catalog.router_port}/.sandboxd/preview/")
    as_json = sandbox("preview", made, "echo", "-o", "json")
    assert json.loads(as_json.stdout) == {"sandbox": made, "service": "echo", "url": link}


@pytest.mark.parametrize("next_path", ["//evil.example", "https://evil.example", "page", "/\\x"])
def test_a_next_that_is_not_a_path_is_refused(made: str, sandbox: Invoke, next_path: str) -> None:
    refused = sandbox("preview", made, "echo", "--next", next_path)
    assert refused.exit_code != 0 and "--next must be a path" in refused.stderr


def test_an_unknown_service_or_sandbox_is_a_clear_error(made: str, sandbox: Invoke) -> None:
    other = sandbox("preview", made, "nope")
    assert other.exit_code != 0 and "no preview link for 'nope' (it has: echo)" in other.stderr
    gone = sandbox("preview", "never-made", "echo")
    assert gone.exit_code != 0 and "never-made" in gone.stderr
