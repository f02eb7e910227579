"""A benchmark harness stopped by a signal stops the servers it started. They run in sessions
of their own, so nothing else would stop them, and one left running spoils the next
measurement: an interrupted `signals_perf.py` once left a control plane, its routers and nginx
running under the next run.

The harness here is the benchmarks' own pattern (`benchmarks/_procs.py`: `Processes`, the
`finally` that stops them, `interrupt_on_signals`), run as a real process with a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import poll
from tests.support.procs import alive

ROOT = Path(__file__).resolve().parents[2]

HARNESS = """
import sys, time
from pathlib import Path
from benchmarks._procs import Processes, interrupt_on_signals

interrupt_on_signals()
procs = Processes(Path(sys.argv[1]))
try:
    procs.start("server", [sys.executable, "-c", "import time; time.sleep(120)"], cpu=0)
    print(procs.pid("server"), flush=True)
    time.sleep(120)
except KeyboardInterrupt:
    sys.exit(130)
finally:
    procs.stop_all()
"""


@pytest.mark.parametrize(
    ("how", "sig"),
    [
        ("kill or timeout", signal.SIGTERM),
        # started in the background by a shell, a process ignores SIGINT from the start (and
        # Python then raises no KeyboardInterrupt of its own)
        ("Ctrl-C, started with SIGINT ignored", signal.SIGINT),
    ],
)
def test_a_stopped_harness_stops_its_servers(tmp_path: Path, how: str, sig: int) -> None:
    argv = [sys.executable, "-c", HARNESS, str(tmp_path)]
    if sig == signal.SIGINT:
        argv = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *argv]
    harness = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    server = 0
    try:
        assert harness.stdout is not None
        server = int(harness.stdout.readline())
        assert alive(server)
        harness.send_signal(sig)
        assert harness.wait(30) == 130, how
        poll.until(lambda: alive(server), lambda running: not running, timeout=10,
                   what=f"{how}: the server stopped with its harness")  # fmt: skip
    finally:
        for pid in (harness.pid, server):
            if pid and alive(pid):
                os.killpg(pid, signal.SIGKILL)
        harness.wait(10)
        if harness.stdout is not None:
            harness.stdout.close()
