"""The telemetry process, seen from the router: started with the router, started again when it
dies (checked by the router's once-a-second sweep), stopped last on shutdown.

The first one is a fork of the router made before the router's loop, threads or sockets exist
(`fork`, from `main`): the two share the interpreter's heap copy-on-write, as far as neither
writes to a page (a reference count is a write): with 1,000 sandboxes, 39.5 MB together at
rest, where a spawned one made 44.5 (and 56 against 61 MB with 1,000 sandboxes' aggregates and
1,000 connections; `benchmarks/signals.py --memory-only` for the loaded figure). One started
again is spawned (`python -m sandboxd_router.telemetry`): by then the router runs threads and
a loop, which a fork would copy half-way. (An idle "zygote" forked at the start to fork the
later ones would keep a third copy of every page both processes write, for a failure case.)

It inherits the ring's memfd, the read end of a fresh names pipe (`Recorder.attach`: the names
are sent again to each new process, which starts at the ring's current record), and, when
spawned, a pipe that carries its settings once — the control plane's URL and the router's
token among them, which neither argv nor the environment (readable in /proc) may hold. A fork
has them in memory already, and closes every other fd it inherits. Stopping closes the names
pipe: the process reads what is left in the ring, closes its sinks (the access log's last
lines) and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from sandboxd_router.record import Recorder

log = logging.getLogger("sandboxd_router")
PIPE_SIZE = 1 << 20  # the names pipe's buffer (new names are rare; the writer never waits)
STOP_TIMEOUT = 15.0  # for the last records to be written and the sinks to close
Serve = Callable[[int, int, dict[str, Any]], None]
"""The forked telemetry process's work: (ring fd, names fd, settings), until the router stops."""


class TelemetryProcess:
    def __init__(
        self,
        recorder: Recorder,
        *,
        access_log: str,
        control_url: str | None,
        token: str | None,
        record_file: str | None = None,
        log_level: str = "info",
        metrics_host: str = "127.0.0.1",
        metrics_port: int | None = None,
        trace_baseline: float = 0.0,
    ) -> None:
        self.recorder = recorder
        self.settings = {
            "accessLog": access_log,
            "controlUrl": control_url,
            "token": token,
            "recordFile": record_file,
            "metricsHost": metrics_host,
            "metricsPort": metrics_port,
            "traceBaseline": trace_baseline,
        }
        self.log_level = log_level
        self.proc: Child | None = None

    def fork(self, serve: Serve) -> None:
        """Start it as a fork of this process, which runs `serve` (imported already, so shared):
        only before the loop, threads or sockets exist."""
        names_r, names_w = _names_pipe()
        settings = {**self.settings, "start": self.recorder.attach(names_w)}
        gc.freeze()  # (the child's collector then never writes to the shared objects' headers)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _forked(serve, self.recorder.fd, names_r, settings)
        os.close(names_r)
        self.proc = Forked(pid)

    def start(self) -> None:
        """Spawn it (`python -m sandboxd_router.telemetry`)."""
        names_r, names_w = _names_pipe()
        config_r, config_w = os.pipe()
        start = self.recorder.attach(names_w)
        ring = self.recorder.fd
        env = {k: v for k, v in os.environ.items() if k != "SANDBOXD_TOKEN"}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sandboxd_router.telemetry", "--ring-fd", str(ring),
                 "--names-fd", str(names_r), "--config-fd", str(config_r),
                 "--log-level", self.log_level],
                pass_fds=(ring, names_r, config_r),
                stdin=subprocess.DEVNULL,
                env=env,
            )  # fmt: skip
            # (a pipe's buffer holds these few hundred bytes: the write cannot block)
            os.write(config_w, json.dumps({**self.settings, "start": start}).encode())
        finally:
            os.close(config_w)
            os.close(config_r)
            os.close(names_r)

    def check(self) -> None:
        """Start it again if it died (from the router's sweep)."""
        proc = self.proc
        if proc is not None and proc.poll() is not None:
            log.warning(
                "the telemetry process exited (status %s): starting it again", proc.returncode
            )
            try:
                self.start()
            except OSError as e:  # (tried again at the next sweep)
                log.error("cannot start the telemetry process: %s", e)

    async def stop(self) -> None:
        """Close the names pipe and wait for the process to finish (bounded)."""
        self.recorder.detach()
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            await asyncio.to_thread(proc.wait, STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("the telemetry process did not stop in %s s: killed", STOP_TIMEOUT)
            proc.kill()
            proc.wait()


def _names_pipe() -> tuple[int, int]:
    names_r, names_w = os.pipe()
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(names_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return names_r, names_w


class Child(Protocol):
    """What the router does with its telemetry process (a `subprocess.Popen` does it)."""

    returncode: Any

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


class Forked:
    """A forked child, watched as a `subprocess.Popen` is."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            time.sleep(0.02)
        return code

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)


def _forked(serve: Serve, ring: int, names: int, settings: dict[str, Any]) -> None:
    """The forked child: the telemetry process's loop, then exit (never the router's code
    after the fork, nor its exit handlers)."""
    code = 1
    try:
        kept = sorted({0, 1, 2, ring, names})
        for low, high in zip(kept, [*kept[1:], os.sysconf("SC_OPEN_MAX")], strict=True):
            os.closerange(low + 1, high)  # the router's other fds (the names pipe's write end)
        serve(ring, names, settings)
        code = 0
    except BaseException:
        log.exception("the telemetry process failed")
    finally:
        logging.shutdown()
        os._exit(code)
