"""The telemetry process, seen from the router: started with the router, started again when it
dies (checked by the router's once-a-second sweep), stopped last on shutdown.

It inherits the ring's memfd, the read end of a fresh names pipe (`Recorder.attach`: the names
are sent again to each new process, which starts at the ring's current record), and a pipe
that carries its settings once — the control plane's URL and the router's token among them,
which neither argv nor the environment (readable in /proc) may hold. Stopping closes the names
pipe: the process reads what is left in the ring, closes its sinks (the access log's last
lines) and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys

from sandboxd_router.record import Recorder

log = logging.getLogger("sandboxd_router")
PIPE_SIZE = 1 << 20  # the names pipe's buffer (new names are rare; the writer never waits)
STOP_TIMEOUT = 15.0  # for the last records to be written and the sinks to close


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
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        names_r, names_w = os.pipe()
        config_r, config_w = os.pipe()
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(names_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
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
