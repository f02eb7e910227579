"""The whole system on one machine: `sandboxd serve --with-router`, and a router that outlives
its control plane."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import fork_command
from tests.integration.conftest import wait_phase
from tests.support import poll
from tests.support.server import Sandboxd, free_port, running_sandboxd

pytestmark = pytest.mark.slow


def catalog(path: Path, *, router_port: int, baseline_port: int) -> Path:
    path.write_text(
        f"""
services:
  - name: echo
    routerPort: {router_port}
    baseline:
      url: http://127.0.0.1:{baseline_port}
      command: ["{sys.executable}", "{fork_command()[1]}"]
      health: /
"""
    )
    return path


@contextmanager
def embedded(root: Path, *, env: Mapping[str, str] | None = None) -> Iterator[tuple[Sandboxd, str]]:
    """`sandboxd serve --with-router --start-baseline` with the `echo` catalog: the server and
    the echo service's address on the router."""
    port = free_port()
    cat = catalog(root / "sandboxd.yaml", router_port=port, baseline_port=free_port())
    args = ["--with-router", "--start-baseline"]
    with running_sandboxd(root / "data", catalog=cat, args=args, env=env) as server:
        yield server, f"http://127.0.0.1:{port}/"


def served_by(url: str, **headers: str) -> tuple[str, str]:
    response = httpx.get(url, headers=headers, timeout=5)
    return response.json()["env"]["SANDBOXD_SANDBOX"], response.headers["sandboxd-route"]


def test_with_router_gives_a_laptop_the_whole_system(tmp_path: Path) -> None:
    port = free_port()
    cat = catalog(tmp_path / "sandboxd.yaml", router_port=port, baseline_port=free_port())
    args = ["--with-router", "--start-baseline"]
    with (
        running_sandboxd(tmp_path / "data", catalog=cat, args=args) as server,
        server.client() as c,
    ):
        key = c.post(
            "/v1/sandboxes",
            json={"name": "pr-9", "forks": [{"service": "echo", "command": fork_command()}]},
        ).json()["routingKey"]
        wait_phase(c, "pr-9", "Ready")
        url = f"http://127.0.0.1:{port}/"
        assert poll.until(
            lambda: _try(lambda: served_by(url, baggage=f"sandbox={key}")),
            lambda r: r == ("pr-9", "sandbox=pr-9"),
            timeout=20,
        )
        assert served_by(url) == ("", "baseline")
        router_pid = _router_pid(server)
        os.kill(router_pid, 9)  # the router dies: sandboxd restarts it
        assert poll.until(
            lambda: _try(lambda: served_by(url, baggage=f"sandbox={key}")),
            lambda r: r == ("pr-9", "sandbox=pr-9"),
            timeout=20,
        )
        assert _router_pid(server) != router_pid
    with pytest.raises(httpx.ConnectError):  # stopping sandboxd stopped its router
        httpx.get(f"http://127.0.0.1:{port}/")


def test_router_keeps_its_last_table_while_the_control_plane_is_down(tmp_path: Path) -> None:
    port = free_port()
    cat = catalog(tmp_path / "sandboxd.yaml", router_port=port, baseline_port=free_port())
    with running_sandboxd(tmp_path / "data", catalog=cat, args=["--start-baseline"]) as server:
        env = {**os.environ, "SANDBOXD_TOKEN": server.token}
        with (tmp_path / "router.err").open("ab") as err:
            router = subprocess.Popen(
                [sys.executable, "-m", "sandboxd_router", "--control-url", server.url, "--access-log", "off"],
                env=env, stderr=err,
            )  # fmt: skip
        try:
            _keep_routing_across_an_outage(server, port)
        finally:
            router.terminate()
            router.wait(10)


def _keep_routing_across_an_outage(server: Sandboxd, port: int) -> None:
    url = f"http://127.0.0.1:{port}/"
    with server.client() as c:
        key = c.post(
            "/v1/sandboxes",
            json={"name": "one", "forks": [{"service": "echo", "command": fork_command()}]},
        ).json()["routingKey"]
        wait_phase(c, "one", "Ready")
    assert poll.until(
        lambda: _try(lambda: served_by(url, baggage=f"sandbox={key}")),
        lambda r: r == ("one", "sandbox=one"),
        timeout=20,
    )
    server.kill()  # the control plane is gone; the fork and the baseline keep running
    for _ in range(20):
        assert served_by(url, baggage=f"sandbox={key}") == ("one", "sandbox=one")
        assert served_by(url) == ("", "baseline")
        time.sleep(0.05)
    server.start()
    with server.client() as c:
        key2 = c.post(
            "/v1/sandboxes",
            json={"name": "two", "forks": [{"service": "echo", "command": fork_command()}]},
        ).json()["routingKey"]
        wait_phase(c, "two", "Ready")
    assert poll.until(
        lambda: _try(lambda: served_by(url, baggage=f"sandbox={key2}")),
        lambda r: r == ("two", "sandbox=two"),
        timeout=30,
    )
    assert served_by(url, baggage=f"sandbox={key}") == ("one", "sandbox=one")


def _try(fetch):  # type: ignore[no-untyped-def]
    try:
        return fetch()
    except (httpx.HTTPError, KeyError, ValueError) as e:
        return repr(e)


def _router_pid(server: Sandboxd) -> int:
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            env = (pid_dir / "environ").read_bytes()
        except OSError:
            continue
        if (
            b"SANDBOXD_ROLE=router\0" in env
            and str(server.data_dir).encode() in (pid_dir / "cmdline").read_bytes()
        ):
            return int(pid_dir.name)
    raise AssertionError("no router process")


def test_a_fault_fires_in_the_embedded_router_and_its_count_reaches_the_api(
    tmp_path: Path,
) -> None:
    """The whole fault path: the spec through the API, the table to the router, the injected
    answer to the client, and the router's report back to `GET /v1/sandboxes/{name}`."""
    port = free_port()
    cat = catalog(tmp_path / "sandboxd.yaml", router_port=port, baseline_port=free_port())
    args = ["--with-router", "--start-baseline"]
    with (
        running_sandboxd(tmp_path / "data", catalog=cat, args=args) as server,
        server.client() as c,
    ):
        fault = {"id": "down", "service": "echo", "kind": "http_error", "status": 503, "times": 2}
        key = c.post("/v1/sandboxes", json={"name": "pr-7", "faults": [fault]}).json()["routingKey"]
        wait_phase(c, "pr-7", "Ready")
        url = f"http://127.0.0.1:{port}/"
        faulted = poll.until(
            lambda: httpx.get(url, headers={"baggage": f"sandbox={key}"}, timeout=5),
            lambda r: r.status_code == 503,
            timeout=20,
            what="the router to apply pr-7's fault",
            ignoring=(httpx.HTTPError,),
        )
        assert faulted.headers["sandboxd-fault"] == "http_error; id=down"
        assert faulted.json() == {
            "error": "injected_fault", "kind": "http_error", "sandbox": "pr-7", "service": "echo",
        }  # fmt: skip
        assert httpx.get(url, timeout=5).status_code == 200  # no key: the baseline, untouched
        second = httpx.get(url, headers={"baggage": f"sandbox={key}"}, timeout=5)
        third = httpx.get(url, headers={"baggage": f"sandbox={key}"}, timeout=5)
        assert (second.status_code, third.status_code) == (503, 200)  # `times: 2`

        def counts() -> tuple[int, int]:
            shown = c.get("/v1/sandboxes/pr-7").json()["faults"][0]
            return shown["matched"], shown["injected"]

        assert poll.until(counts, lambda n: n == (3, 2), timeout=10, what="counts") == (3, 2)
        reasons = [e["reason"] for e in c.get("/v1/sandboxes/pr-7/events").json()["items"]]
        assert reasons.count("FaultInjected") == 1
