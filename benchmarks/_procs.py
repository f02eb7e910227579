"""Processes for the router benchmark: tools, ports, CPU pinning, start/stop, memory.

Every server the benchmark starts goes through `Processes`, which puts it in its own process
group (so a Ctrl-C reaches only the harness, which then stops everything in order) and stops
each group by its id — SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

TOOLS = {"nginx": "nginx", "wrk": "wrk"}  # binary → Debian package


class HarnessError(RuntimeError):
    """The benchmark itself could not run (as opposed to a bar that was missed)."""


def ensure_tools() -> dict[str, str]:
    """The paths of nginx and wrk, installing the Debian packages when missing and root.

    Debian's images deny service starts during installs (policy-rc.d), and we never start,
    stop or reconfigure the system nginx service: every nginx here is our own process.
    """
    missing = [pkg for binary, pkg in TOOLS.items() if not _which(binary)]
    if missing:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise HarnessError(
                f"missing {', '.join(missing)}: install the Debian packages "
                f"(apt-get install {' '.join(missing)}) or run this as root"
            )
        print(f"installing {' '.join(missing)} from Debian …", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    paths = {binary: _which(binary) for binary in TOOLS}
    if not all(paths.values()):
        raise HarnessError(f"still missing after install: {paths}")
    return {k: v for k, v in paths.items() if v}


def _which(binary: str) -> str | None:
    return shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin")


def interrupt_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the harness, so that a run stopped by
    Ctrl-C, `kill` or `timeout` (or started in the background, where SIGINT is ignored) unwinds
    through the `finally` that stops its servers: each runs in a session of its own, so
    nothing else would stop them, and a server left running spoils the next measurement."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def prepare_self() -> None:
    """Pin the harness (and so every client it runs in-process) to core 1, lift the fd limit."""
    if len(os.sched_getaffinity(0)) < 2 or (os.cpu_count() or 1) < 2:
        raise HarnessError("needs 2 cores: the proxy on core 0, load and origin on core 1")
    os.sched_setaffinity(0, {1})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 16384):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 16384), hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv]


class Processes:
    """The servers of one benchmark run; `stop_all` (also on failure) stops every one."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self._running: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self, name: str, argv: list[str], *, cpu: int, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (self._logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                pinned(cpu, argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self._running[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self._logs / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def wait_accepting(self, name: str, port: int, *, timeout: float = 30) -> None:
        """Until `port` accepts a connection; fails early if the process exits."""
        proc = self._running[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise HarnessError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise HarnessError(f"{name} did not accept on port {port} in {timeout}s:\n{self.log(name)}")

    def check_alive(self, name: str) -> None:
        proc = self._running[name]
        if proc.poll() is not None:
            raise HarnessError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")

    def pid(self, name: str) -> int:
        return self._running[name].pid

    def stop(self, name: str) -> None:
        proc = self._running.pop(name, None)
        if proc is None:
            return
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)  # the group we created for it: its workers too
            try:
                proc.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue

    def stop_all(self) -> None:
        for name in reversed(list(self._running)):
            self.stop(name)


def rss_kib(pid: int) -> int:
    """VmRSS of `pid` plus every process below it (the taskset'd command may have children)."""
    total = 0
    for p in [pid, *_descendants(pid)]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cpu_busy(seconds: float = 1.0) -> dict[int, float]:
    """Share of each core busy over `seconds` (/proc/stat): are others using the machine?"""

    def sample() -> dict[int, tuple[int, int]]:
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                values = [int(v) for v in fields[:8]]
                out[int(name[3:])] = (values[3] + values[4], sum(values))  # idle + iowait, all
        return out

    before = sample()
    time.sleep(seconds)
    after = sample()
    return {
        cpu: 1 - (after[cpu][0] - idle) / max(1, after[cpu][1] - total)
        for cpu, (idle, total) in before.items()
    }


def machine_load(when: str) -> None:
    """Print how busy each core is: others' work on the machine shows up as noise."""
    busy = cpu_busy(1.0)
    shares = ", ".join(f"core {cpu} {share:.0%}" for cpu, share in sorted(busy.items()))
    note = "" if max(busy.values()) < 0.10 else "  (others are using the CPUs: expect noise)"
    print(f"CPU busy {when}: {shares}{note}", flush=True)


def venv_bin(name: str) -> str:
    """A console script next to the running interpreter (the project's virtualenv)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)
