"""A real PostgreSQL server for the test session: initdb into a temp dir, start on loopback.

As root the server runs as the `postgres` user (PostgreSQL refuses to run as root).
scripts/setup installs the Debian package when it is missing and exports SANDBOXD_PG_BIN.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

from tests.support import poll
from tests.support.server import free_port


def pg_bin() -> Path:
    explicit = os.environ.get("SANDBOXD_PG_BIN")
    candidates = [explicit] if explicit else sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    for candidate in reversed(candidates):
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise RuntimeError(
        "PostgreSQL server binaries not found: install the Debian package 'postgresql' "
        "(scripts/test does so when run as root) or set SANDBOXD_PG_BIN"
    )


class PostgresServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sandboxd-pg-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def start(self) -> None:
        bindir = pg_bin()
        data = self.root / "data"
        subprocess.run(
            [*self._as_user, str(bindir / "initdb"), "-D", str(data), "-U", "sandboxd",
             "-A", "trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True,
        )  # fmt: skip
        with (self.root / "postgres.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [*self._as_user, str(bindir / "postgres"), "-D", str(data), "-p", str(self.port),
                 "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=300"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        poll.until(
            self._accepting,
            timeout=30,
            what="PostgreSQL to accept a connection",
            ignoring=(psycopg.OperationalError,),
            context=self._log,
        )

    def _accepting(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited with {self.proc.returncode}:\n{self._log()}")
        psycopg.connect(self.dsn("postgres"), connect_timeout=1).close()
        return True

    def _log(self) -> str:
        return (self.root / "postgres.log").read_text(errors="replace")

    def dsn(self, database: str) -> str:
        return f"postgresql://sandboxd@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://sandboxd@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
