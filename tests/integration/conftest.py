"""The API suite runs once against SQLite and once against a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import write_catalog
from tests.support import poll
from tests.support.postgres import PostgresServer
from tests.support.server import Sandboxd, running_sandboxd


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend, for tests that drive the store directly."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sandboxd.db'}"
    pg: PostgresServer = request.getfixturevalue("postgres")
    return pg.new_database()


@pytest.fixture(scope="module")
def api(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sandboxd]:
    """One sandboxd per module and backend: health checks fail after 3 s, graceful stop 1 s;
    a module's `SANDBOXD_ENV` (a dict) adds settings of its own."""
    root = tmp_path_factory.mktemp(f"api-{backend}")
    url = None
    if backend == "postgres":
        pg: PostgresServer = request.getfixturevalue("postgres")
        url = pg.new_database()
    catalog = write_catalog(root / "sandboxd.yaml")
    env = {"SANDBOXD_HEALTH_TIMEOUT": "3", "SANDBOXD_STOP_GRACE": "1"}
    env.update(getattr(request.module, "SANDBOXD_ENV", {}))
    with running_sandboxd(root / "data", catalog=catalog, database_url=url, env=env) as server:
        yield server


@pytest.fixture
def client(api: Sandboxd) -> Iterator[httpx.Client]:
    with api.client() as c:
        yield c


def wait_phase(client: httpx.Client, name: str, phase: str, *, timeout: float = 20) -> Any:
    return poll.until(
        lambda: client.get(f"/v1/sandboxes/{name}").json(),
        lambda body: body.get("phase") == phase,
        timeout=timeout,
        what=f"sandbox {name} to be {phase}",
    )


def snapshot(client: httpx.Client) -> list[dict[str, Any]]:
    """What is stored, minus what the reconciler may legitimately update meanwhile."""
    items = client.get("/v1/sandboxes").json()["items"]
    keep = ("name", "uid", "routingKey", "spec", "labels", "expiresAt", "createdAt")
    return [{k: item[k] for k in keep} for item in items]
