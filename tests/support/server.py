"""Run the real `sandboxd serve` as a subprocess on a free loopback port, for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support import poll

TOKEN = "test-admin-token-0123456789"


_GIVEN: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never one this process was given before: the
    kernel may hand out a port again as soon as the probing socket closes, and two servers
    told the same port (a router's listener and its admin port, seen) fail at random."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


@dataclass
class Sandboxd:
    """A running control plane: its URL, admin token and data directory."""

    data_dir: Path
    port: int
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    token: str = TOKEN

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, *, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def scoped_token(self, name: str, label: str, *extra: str) -> str:
        """A scoped token, made as an operator does (`sandboxd token create`)."""
        done = subprocess.run(
            [sys.executable, "-m", "sandboxd", "token", "create", name, "--label", label, *extra],
            env=self.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def start(self, *, timeout: float = 30) -> None:
        with (self.data_dir / "sandboxd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sandboxd", "serve", "--port", str(self.port), *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        poll.until(
            self._ready,
            timeout=timeout,
            what="sandboxd to answer /readyz with 200",
            ignoring=(httpx.HTTPError,),
            context=self.log,
        )

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"sandboxd exited with {self.proc.returncode}:\n{self.log()}")
        return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout)
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(sig=signal.SIGKILL)

    def log(self) -> str:
        path = self.data_dir / "sandboxd.log"
        return path.read_text(errors="replace")[-8000:] if path.exists() else ""


@contextmanager
def running_sandboxd(
    data_dir: Path,
    *,
    catalog: Path | None = None,
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
    args: list[str] | None = None,
) -> Iterator[Sandboxd]:
    """Start sandboxd with the test admin token; stop it (SIGTERM) on exit."""
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
    full_env |= {
        "SANDBOXD_DATA_DIR": str(data_dir),
        "SANDBOXD_ADMIN_TOKEN": TOKEN,
        "SANDBOXD_REAPER_INTERVAL": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if database_url:
        full_env["SANDBOXD_DATABASE_URL"] = database_url
    full_env |= dict(env or {})
    extra = list(args or [])
    if catalog is not None:
        extra += ["--catalog", str(catalog)]
    server = Sandboxd(data_dir=data_dir, port=free_port(), env=full_env, args=extra)
    server.start()
    try:
        yield server
    finally:
        server.stop()
