"""Lifecycle across time and crashes: TTL expiry, SIGKILL mid-provision and mid-delete,
adoption after a restart, and the baseline services' processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import fork_command, write_catalog
from tests.integration.conftest import wait_phase
from tests.support import poll
from tests.support.procs import fork_pids
from tests.support.server import Sandboxd, free_port, running_sandboxd

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Sandboxd]:
    catalog = write_catalog(tmp_path / "sandboxd.yaml")
    env = {"SANDBOXD_STOP_GRACE": "3"}
    with running_sandboxd(tmp_path / "data", catalog=catalog, env=env) as s:
        yield s


def test_expired_sandbox_is_gone_within_the_reaper_interval(server: Sandboxd) -> None:
    with server.client() as client:
        created = client.post(
            "/v1/sandboxes",
            json={
                "name": "short",
                "ttl": "3s",
                "forks": [{"service": "echo", "command": fork_command()}],
            },
        ).json()
        wait_phase(client, "short", "Ready")
        expires = time.time() + 3
        gone = wait_phase(client, "short", "Deleted", timeout=3 + 1 + 10)
        assert time.time() <= expires + 1 + 10  # one reaper interval (1 s) plus 10 s
        assert gone["reason"] == "Expired"
        assert fork_pids(sandbox="short") == []
        assert created["routingKey"] not in client.get("/v1/routes").json()["routes"]
        reasons = [e["reason"] for e in client.get("/v1/sandboxes/short/events").json()["items"]]
        assert "Expired" in reasons and reasons[-1] == "Deleted"


def test_sigkill_while_provisioning_converges_to_ready_with_one_fork(server: Sandboxd) -> None:
    with server.client() as client:
        forks = [{"service": "echo", "command": fork_command("--delay", "2")}]
        client.post("/v1/sandboxes", json={"name": "prov", "forks": forks})
        wait_phase(client, "prov", "Provisioning")
    server.kill()
    # the fork outlives its parent: a restart must adopt it (killed between the fork's fork()
    # and its exec, the parent leaves a child whose environment, read from /proc, has the
    # markers only once the exec is done)
    poll.until(lambda: len(fork_pids(sandbox="prov")), lambda n: n == 1, timeout=10,
               what="the fork, marked")  # fmt: skip
    server.start()
    with server.client() as client:
        ready = wait_phase(client, "prov", "Ready")
        pids = fork_pids(sandbox="prov")
        assert pids == [ready["forks"][0]["pid"]]
        assert httpx.get(ready["forks"][0]["upstream"]).json()["pid"] == pids[0]


def test_sigkill_while_terminating_converges_to_deleted_and_leaves_nothing(
    server: Sandboxd,
) -> None:
    with server.client() as client:
        forks = [{"service": "echo", "command": fork_command("--ignore-term")}]
        client.post("/v1/sandboxes", json={"name": "term", "forks": forks})
        wait_phase(client, "term", "Ready")
        client.delete("/v1/sandboxes/term")
        assert client.get("/v1/sandboxes/term").json()["phase"] == "Terminating"
    server.kill()  # mid-grace: the fork ignores SIGTERM and is still running
    assert len(fork_pids(sandbox="term")) == 1
    server.start()
    with server.client() as client:
        wait_phase(client, "term", "Deleted")
    assert fork_pids(sandbox="term") == []
    assert not (server.data_dir / "forks" / "term").exists()


def test_restart_adopts_running_forks_instead_of_duplicating(server: Sandboxd) -> None:
    with server.client() as client:
        client.post(
            "/v1/sandboxes",
            json={"name": "keep", "forks": [{"service": "echo", "command": fork_command()}]},
        )
        before = wait_phase(client, "keep", "Ready")["forks"][0]
    server.kill()
    server.start()
    with server.client() as client:
        after = poll.until(
            lambda: client.get("/v1/sandboxes/keep").json(),
            lambda b: b["phase"] == "Ready" and b["forks"][0]["ready"],
            timeout=20,
        )["forks"][0]
        assert after["pid"] == before["pid"] and after["upstream"] == before["upstream"]
        assert fork_pids(sandbox="keep") == [before["pid"]]


def test_a_leftover_fork_without_a_sandbox_is_removed(server: Sandboxd) -> None:
    with server.client() as client:
        client.post(
            "/v1/sandboxes",
            json={"name": "orphan", "forks": [{"service": "echo", "command": fork_command()}]},
        )
        wait_phase(client, "orphan", "Ready")
    server.kill()
    # the database forgets the sandbox (a restore from an older backup, say)
    import sqlite3

    with sqlite3.connect(server.data_dir / "sandboxd.db") as db:
        db.execute("DELETE FROM sandboxes WHERE name = 'orphan'")
    assert len(fork_pids(sandbox="orphan")) == 1
    server.start()
    poll.until(lambda: fork_pids(sandbox="orphan"), lambda pids: pids == [], timeout=20)


def test_clean_shutdown_stops_forks_and_a_restart_brings_them_back(server: Sandboxd) -> None:
    with server.client() as client:
        client.post(
            "/v1/sandboxes",
            json={"name": "cycle", "forks": [{"service": "echo", "command": fork_command()}]},
        )
        first = wait_phase(client, "cycle", "Ready")["forks"][0]
    assert server.stop() in (0, -15)  # uvicorn re-raises SIGTERM once it has shut down
    assert "Application shutdown complete" in server.log()
    assert fork_pids(sandbox="cycle") == []
    server.start()
    with server.client() as client:
        back = poll.until(
            lambda: client.get("/v1/sandboxes/cycle").json(),
            lambda b: b["phase"] == "Ready" and b["forks"][0]["pid"] != first["pid"],
            timeout=20,
        )
    assert fork_pids(sandbox="cycle") == [back["forks"][0]["pid"]]


def test_start_baseline_runs_the_catalog_services_and_stops_them(tmp_path: Path) -> None:
    port = free_port()
    catalog = write_catalog(tmp_path / "sandboxd.yaml", baseline_port=port)
    with running_sandboxd(tmp_path / "data", catalog=catalog, args=["--start-baseline"]) as server:
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
        server.kill()  # the baseline outlives a SIGKILLed sandboxd ...
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
        server.start()  # ... and the next start replaces it instead of failing on the port
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/")


def test_bad_catalog_is_refused_at_start_naming_file_and_field(tmp_path: Path) -> None:
    catalog = tmp_path / "sandboxd.yaml"
    catalog.write_text(
        "services:\n  - name: Echo\n    routerPort: 99999\n    baseline: {url: nope}\n"
    )
    server = Sandboxd(data_dir=tmp_path, port=free_port(), env={}, args=["--catalog", str(catalog)])
    with pytest.raises(RuntimeError, match="exited with 2") as failure:
        server.start(timeout=20)
    message = str(failure.value)
    assert str(catalog) in message
    assert "services[0].name" in message and "services[0].routerPort" in message
    assert "services[0].baseline.url" in message
    assert "Traceback" not in message


def test_a_baseline_port_taken_by_another_process_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        catalog = write_catalog(tmp_path / "sandboxd.yaml", baseline_port=port)
        server = Sandboxd(
            data_dir=tmp_path, port=free_port(), env={},
            args=["--catalog", str(catalog), "--start-baseline"],
        )  # fmt: skip
        with pytest.raises(RuntimeError, match="exited with 2") as failure:
            server.start(timeout=20)
    assert f"port {port} is already in use" in str(failure.value)
    assert "Traceback" not in str(failure.value)
