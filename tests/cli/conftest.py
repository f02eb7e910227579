"""Fixtures for the `sandbox` CLI: a clean environment, a runner, one real sandboxd per module."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from sandboxd_cli.main import app
from tests.support.server import Sandboxd, free_port, running_sandboxd

Invoke = Callable[..., Result]
Env = Mapping[str, str | None]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's sandboxd settings or the CI's GitHub Actions variables."""
    for key in list(os.environ):
        if key.startswith(("SANDBOXD_", "GITHUB_")):
            monkeypatch.delenv(key)


def run_cli(*args: str, env: Env | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=dict(env or {}), input=stdin)


@dataclass(frozen=True)
class Catalog:
    path: Path
    router_port: int
    """The `echo` service's router port: what the CLI's curl line must point at."""


def write_catalog(path: Path) -> Catalog:
    """A one-service catalog: `echo`, with a baseline nobody needs to start."""
    router_port = free_port()
    path.write_text(
        "services:\n"
        "  - name: echo\n"
        "    protocol: http\n"
        f"    routerPort: {router_port}\n"
        f'    baseline: {{url: "http://127.0.0.1:{free_port()}", health: /}}\n'
    )
    return Catalog(path=path, router_port=router_port)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return write_catalog(tmp_path_factory.mktemp("cli-catalog") / "sandboxd.yaml")


@pytest.fixture(scope="module")
def server(catalog: Catalog, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandboxd]:
    """One sandboxd per test module; a fork that never gets healthy fails only after 30 s."""
    data = tmp_path_factory.mktemp("cli-sandboxd")
    env = {"SANDBOXD_HEALTH_TIMEOUT": "30", "SANDBOXD_STOP_GRACE": "1"}
    with running_sandboxd(data, catalog=catalog.path, env=env) as running:
        yield running


@pytest.fixture
def sandbox(server: Sandboxd) -> Invoke:
    """`sandbox ARGS...` against the module's server, as a user with SANDBOXD_URL/TOKEN set."""

    def invoke(*args: str, env: Env | None = None, stdin: str | None = None) -> Result:
        connection = {"SANDBOXD_URL": server.url, "SANDBOXD_TOKEN": server.token}
        return run_cli(*args, env={**connection, **(env or {})}, stdin=stdin)

    return invoke
