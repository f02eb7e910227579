"""The troubleshooter example, run for real: its catalog, sandboxd with router and baselines.

The example's catalog fixes its ports (router 7311-7313, baselines 7411-7413). Tests run it with
the same file, changed in two ways only: every port becomes a free one (so a leftover process or
a demo running on this machine cannot make the suite fail or, worse, answer in its place; see
`listen_port` for which) and
each command names its script by absolute path (the copy lives in a temporary directory).
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support import poll
from tests.support.server import Sandboxd, running_sandboxd

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "troubleshooter"
SANDBOXES = EXAMPLE / "sandboxes"
BIN = Path(sys.executable).parent


LISTEN_PORTS = range(20000, 32768)
"""Below Linux's ephemeral range (32768-60999), where `free_port()` answers and from which every
outgoing connection takes its local port: a port picked there can be taken by a loopback
connection in the seconds before the router binds it, and the router then skips that listener
until the next route table (`cannot listen on …` in its log)."""


def listen_port(taken: set[int]) -> int:
    """A port nothing listens on, outside the ephemeral range and not in `taken` (added)."""
    while True:
        port = random.choice(LISTEN_PORTS)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port


def portable_catalog(directory: Path) -> Path:
    """The example catalog on free ports, runnable from `directory`."""
    catalog = yaml.safe_load((EXAMPLE / "sandboxd.yaml").read_text())
    taken: set[int] = set()
    for service in catalog["services"]:
        service["routerPort"] = listen_port(taken)
        service["baseline"]["url"] = f"http://127.0.0.1:{listen_port(taken)}"
        command = service["baseline"]["command"]
        service["baseline"]["command"] = [
            str(EXAMPLE / arg) if arg.endswith(".py") else arg for arg in command
        ]
    path = directory / "sandboxd.yaml"
    path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    return path


@dataclass
class Troubleshooter:
    server: Sandboxd
    ports: dict[str, int]
    """service → its router port."""

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
        env |= {"SANDBOXD_URL": self.server.url, "SANDBOXD_TOKEN": self.server.token}
        return subprocess.run(
            [str(BIN / "sandbox"), *args], env=env, capture_output=True, text=True, timeout=90
        )

    def up(self, spec: Path | str) -> dict[str, Any]:
        """Create a sandbox from a spec file (or YAML text) with the CLI; wait until Ready."""
        if isinstance(spec, str):
            path = self.server.data_dir / f"spec-{time.monotonic_ns()}.yaml"
            path.write_text(spec)
            spec = path
        result = self.cli("up", "-f", str(spec), "--wait", "-o", "json")
        assert result.returncode == 0, result.stdout + result.stderr
        name = yaml.safe_load(spec.read_text())["name"]
        return self.get(name)

    def get(self, name: str) -> dict[str, Any]:
        with self.server.client() as api:
            response = api.get(f"/v1/sandboxes/{name}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def routes(self) -> dict[str, Any]:
        with self.server.client() as api:
            return dict(api.get("/v1/routes").json()["routes"])

    def diagnose(self, *, baggage: str | None = None) -> httpx.Response:
        """`POST /diagnose {"namespace": "demo"}` through the router's agent port."""
        return self.http_post_diagnose({"baggage": baggage} if baggage else {})

    def http_post_diagnose(self, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(
            f"{self.url('agent')}/diagnose", json={"namespace": "demo"}, headers=headers, timeout=60
        )


@contextmanager
def running_troubleshooter(
    data_dir: Path, *, env: Mapping[str, str] | None = None
) -> Iterator[Troubleshooter]:
    """sandboxd serving the example with its router and baselines; all stopped on exit.
    `env`: more of sandboxd's environment, which its baselines and forks inherit."""
    data_dir.mkdir(parents=True, exist_ok=True)
    catalog = portable_catalog(data_dir)
    ports = {s["name"]: s["routerPort"] for s in yaml.safe_load(catalog.read_text())["services"]}
    # The baselines run `python3`: the one of this virtualenv, which has the MCP SDK.
    path = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with running_sandboxd(
        data_dir,
        catalog=catalog,
        env={**(env or {}), **path},
        args=["--with-router", "--start-baseline"],
    ) as server:
        app = Troubleshooter(server=server, ports=ports)
        wait_for_router(app)
        yield app


@contextmanager
def agent_process(port: int, env: Mapping[str, str]) -> Iterator[str]:
    """examples/troubleshooter/agent.py alone on `port` with exactly `env`; its URL. Stopped
    (and so flushed) on exit."""
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE / "agent.py")],
        env={**env, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        poll.port_open(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)


def wait_for_router(app: Troubleshooter, *, timeout: float = 20) -> None:
    poll.until(
        lambda: answer(app.diagnose()),
        lambda seen: seen[0] == 200,
        timeout=timeout,
        what="the agent to answer 200 through the router",
        ignoring=(httpx.HTTPError,),
        context=app.server.log,
    )


def answer(response: httpx.Response) -> tuple[int, str]:
    """(status, body): what a failed wait shows."""
    return response.status_code, response.text
