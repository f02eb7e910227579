"""The lifespan closes what it opened when the start fails half way: the runtime, the baselines,
the reconciler and the database engine (observed as tasks, processes and open files)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandboxd.app import SWITCH_INTERVAL, confinement, create_app
from sandboxd.runtime.local import owner_id
from sandboxd.runtime.supervisor import SupervisorError
from sandboxd.settings import Settings
from tests.conftest import fork_command
from tests.support.server import TOKEN, free_port

STARTED = {"reconciler", "local-runtime-monitor", "baseline-watch", "router-watch"}


def _settings(tmp_path: Path, *, baseline_port: int) -> Settings:
    catalog = tmp_path / "sandboxd.yaml"
    catalog.write_text(
        f"""
services:
  - name: echo
    routerPort: {free_port()}
    baseline:
      url: http://127.0.0.1:{baseline_port}
      command: ["{sys.executable}", "{fork_command()[1]}"]
      health: /
"""
    )
    return Settings(
        data_dir=tmp_path / "data",
        catalog=catalog,
        port=free_port(),
        admin_token=TOKEN,
        start_baseline=True,
        with_router=True,
        allow_unconfined_forks=True,
    )


def _owned_pids(owner: str) -> list[int]:
    """Live processes carrying this data dir's owner marker, as /proc shows them."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes() if entry.name.isdigit() else b""
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] if environ else ""
        except OSError:
            continue
        if state != "Z" and f"SANDBOXD_OWNER={owner}".encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _open_files_under(root: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the descriptor listdir itself used
        if target.startswith(str(root)):
            found.append(target)
    return found


async def _fail_to_start(settings: Settings) -> None:
    app = create_app(settings, confined=confinement(settings))
    with pytest.raises(SupervisorError):
        async with app.router.lifespan_context(app):
            pytest.fail("the lifespan started")


async def test_a_router_that_cannot_start_leaves_nothing_running(tmp_path: Path) -> None:
    baseline_port = free_port()
    settings = _settings(tmp_path, baseline_port=baseline_port)
    settings.data_path.mkdir(parents=True)
    (settings.data_path / "router").write_text("in the way of the router's log directory")
    await _fail_to_start(settings)
    running = {t.get_name() for t in asyncio.all_tasks() if not t.done()}
    assert not running & STARTED
    assert _owned_pids(owner_id(settings.data_path)) == []  # the baseline was stopped
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{baseline_port}/")
    assert _open_files_under(settings.data_path) == []  # the engine's connections are closed


async def test_a_baseline_that_cannot_start_leaves_nothing_running(tmp_path: Path) -> None:
    baseline_port = free_port()
    settings = _settings(tmp_path, baseline_port=baseline_port)
    with socket_taken(baseline_port):
        await _fail_to_start(settings)
    running = {t.get_name() for t in asyncio.all_tasks() if not t.done()}
    assert not running & STARTED
    assert _owned_pids(owner_id(settings.data_path)) == []
    assert _open_files_under(settings.data_path) == []


@contextlib.contextmanager
def socket_taken(port: int) -> Iterator[None]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        yield


async def test_the_gil_switch_interval_is_short_while_serving_and_restored_after(
    tmp_path: Path,
) -> None:
    """A metrics call shares the GIL with the ingest of router signals: while the app serves,
    a thread waiting for the GIL waits `SWITCH_INTERVAL`, not Python's 5 ms; the process's own
    interval comes back when the app stops (an app in a test's process leaves it as it was)."""
    settings = _settings(tmp_path, baseline_port=free_port()).model_copy(
        update={"start_baseline": False, "with_router": False}
    )
    before = sys.getswitchinterval()
    app = create_app(settings, confined=confinement(settings))
    async with app.router.lifespan_context(app):
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
    assert sys.getswitchinterval() == before
    assert before != pytest.approx(SWITCH_INTERVAL)
