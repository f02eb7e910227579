"""Shared fixtures: a real PostgreSQL server (once per session), catalogs, fork commands."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer
from tests.support.server import free_port

ENVSERVER = str(Path(__file__).parent / "support" / "envserver.py")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


def fork_command(*extra: str) -> list[str]:
    """A fork that serves its environment as JSON on ${PORT}."""
    return [sys.executable, ENVSERVER, *extra]


def write_catalog(path: Path, *, baseline_port: int | None = None) -> Path:
    """A catalog with `echo` (http) and `tools` (mcp), on free router ports."""
    baseline_port = baseline_port or free_port()
    path.write_text(
        f"""
baggageKey: sandbox
services:
  - name: echo
    protocol: http
    routerPort: {free_port()}
    baseline:
      url: http://127.0.0.1:{baseline_port}
      command: ["{sys.executable}", "-m", "http.server", "{baseline_port}", "--bind", "127.0.0.1"]
      health: /
  - name: tools
    protocol: mcp
    routerPort: {free_port()}
    baseline:
      url: http://127.0.0.1:{free_port()}
"""
    )
    return path
