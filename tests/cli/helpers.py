"""Helpers for the CLI tests that run against a real sandboxd: specs and the API's view."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from typer.testing import Result

from tests.cli.conftest import run_cli
from tests.support.server import Sandboxd

SERVE = [sys.executable, "-m", "http.server", "${PORT}", "--bind", "127.0.0.1"]
EXIT_AT_ONCE = [sys.executable, "-c", "raise SystemExit(3)"]
NEVER_HEALTHY = [sys.executable, "-c", "import time; time.sleep(60)"]


def write_spec(path: Path, *, command: list[str], name: str | None = None) -> str:
    """A spec file forking `echo` with `command` and health `/`; its path."""
    spec: dict[str, Any] = {"forks": [{"service": "echo", "command": command, "health": "/"}]}
    if name:
        spec["name"] = name
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def stored(server: Sandboxd, name: str) -> dict[str, Any]:
    """The sandbox as the API has it ({} when the name was never seen)."""
    with server.client() as client:
        response = client.get(f"/v1/sandboxes/{name}")
    return {} if response.status_code == 404 else dict(response.json())


def names(server: Sandboxd) -> set[str]:
    """The names of every sandbox the API lists."""
    with server.client() as client:
        return {item["name"] for item in client.get("/v1/sandboxes").json()["items"]}


def as_user(server: Sandboxd, *args: str, **env: str | None) -> Result:
    """`sandbox ARGS...` with SANDBOXD_URL and SANDBOXD_TOKEN pointing at `server`."""
    return run_cli(*args, env={"SANDBOXD_URL": server.url, "SANDBOXD_TOKEN": server.token, **env})
