"""The signals benchmark's servers: a real control plane with 1,000 sandboxes, routers that
follow it with recording on and off, the nginx peer with and without a JSON access log, an
OTLP receiver — and what each router's telemetry process costs (CPU, records lost).

Routers following one control plane all listen on the catalog's port for `echo`: each gets its
own loopback address (127.0.0.1, .2, …). The telemetry process is the router's child and
inherits its CPU pinning (core 0): its work competes with the request path, as in production
on a one-core router.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import _nginx, _routes
from benchmarks._procs import Processes, free_port

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.server import Sandboxd  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
LOST = re.compile(r"request records lost: .*\((\d+) in all\)")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass(frozen=True)
class Proxy:
    """Something wrk loads: `host:port`, and for a router its name in `Processes`."""

    name: str
    host: str
    port: int
    router: bool = True
    description: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"


@dataclass
class Usage:
    """CPU (clock ticks) of a router and of its telemetry process at one moment."""

    router: int
    telemetry: int
    telemetry_pid: int | None


@dataclass
class Runs:
    """A proxy's runs: req/s, errors, and for a router its processes' CPU per run."""

    rps: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    router_share: list[float] = field(default_factory=list)  # of a core, during the run
    telemetry_share: list[float] = field(default_factory=list)
    telemetry_seconds: float = 0.0  # CPU over the runs and their catch-up after
    lost: int = 0
    control_plane_share: list[float] = field(default_factory=list)  # on core 1, beside wrk
    cores: list[tuple[float, float]] = field(default_factory=list)  # busy share of core 0, 1
    spans: int | None = None  # received by the OTLP receiver over the runs (router-otlp)


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def core_ticks() -> dict[int, tuple[int, int]]:
    """Per core (/proc/stat): (idle + iowait, all) clock ticks so far."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            values = [int(v) for v in fields[:8]]
            out[int(name[3:])] = (values[3] + values[4], sum(values))
    return out


def busy(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> list[float]:
    """The share of each core busy between two `core_ticks`."""
    return [
        1 - (after[cpu][0] - idle) / max(1, after[cpu][1] - total)
        for cpu, (idle, total) in sorted(before.items())
    ]


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS, RssShmem (the record ring, mapped by the router and its telemetry process both),
    Pss (shared pages split between the processes mapping them) and Private_Dirty (the pages
    only this process wrote: what it costs beside the pages it shares), KiB."""
    out = {}
    for name in ("status", "smaps_rollup"):
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssShmem", "Pss", "Private_Dirty"):
                out[key] = int(value.split()[0])
    return out


def resident_kib(pids: list[int]) -> int | None:
    """The physical pages resident in any of `pids`, each counted once (KiB): what these
    processes hold together, as a container running just them is charged — the shared ring,
    the interpreter's and libraries' pages once, not once per process (VmRSS) nor split with
    every other process mapping the same files (Pss). Read from /proc/PID/pagemap's frame
    numbers, which only root sees (None otherwise)."""
    frames: set[int] = set()
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in pids:
        ranges = []
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            start, _, end = line.split()[0].partition("-")
            ranges.append((int(start, 16), int(end, 16)))
        with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
            for start, end in ranges:
                pagemap.seek(start // page * 8)
                entries = pagemap.read((end - start) // page * 8)
                for (entry,) in struct.iter_unpack("<Q", entries):
                    if entry >> 63:  # present in RAM
                        frame = entry & ((1 << 55) - 1)
                        if frame == 0:
                            return None  # frame numbers hidden: not root
                        frames.add(frame)
    return len(frames) * page // 1024


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def usage(router_pid: int) -> Usage:
    """The router's CPU and its telemetry process's (its only child; None with --record off)."""
    child = next(iter(children(router_pid)), None)
    return Usage(cpu_ticks(router_pid), cpu_ticks(child) if child else 0, child)


def settle(router_pid: int, *, limit: float = 4.0) -> None:
    """Until the telemetry process has caught up (no CPU used for 0.3 s), at most `limit` s:
    its catch-up after a run must not run during the next proxy's run."""
    deadline = time.monotonic() + limit
    last = usage(router_pid).telemetry
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = usage(router_pid).telemetry
        if now == last:
            return
        last = now


def records_lost(procs: Processes, name: str) -> int:
    """The highest 'request records lost … (n in all)' the router's telemetry logged (its
    stderr is the router's, in the router's log)."""
    return max((int(m.group(1)) for m in LOST.finditer(procs.log(name))), default=0)


def start_router(
    procs: Processes,
    name: str,
    *,
    server: Sandboxd,
    token: str,
    host: str,
    port: int,
    sandboxes: int,
    record: bool,
    access_log: Path | None = None,
    otlp: str | None = None,
) -> Proxy:
    """A router on core 0 following `server` with the router token; `otlp`: the endpoint in
    `OTEL_EXPORTER_OTLP_ENDPOINT` (no OTEL_* variable at all without it)."""
    router = _routes.Router(name, {"echo": port}, free_port(), sandboxes, host=host)
    source = ["--control-url", server.url, f"--token={token}"]
    argv = _routes.argv(admin_port=router.admin_port, source=source, record=record, host=host)
    if access_log is not None:
        argv += ["--access-log", str(access_log)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if otlp:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp
    procs.start(name, argv, cpu=0, env=env)
    _routes.wait_ready(procs, router)
    return Proxy(name, host, port)


def start_nginx(
    procs: Processes,
    name: str,
    *,
    nginx: str,
    work_dir: Path,
    origin: _routes.Service,
    keys: dict[str, str],
    access_log: Path | None = None,
) -> Proxy:
    """The routing peer on core 0, its map holding the control plane's keys."""
    port = free_port()
    run_dir = work_dir / name
    text = _nginx.routing_conf(
        run_dir,
        listen={"echo": port},
        upstreams={"echo": (origin.baseline_port, origin.fork_port)},
        keys=keys,
        access_log=access_log,
    )
    conf = _nginx.write(run_dir, text)
    procs.start(name, _nginx.argv(nginx, run_dir, conf), cpu=0)
    procs.wait_accepting(name, port)
    return Proxy(name, "127.0.0.1", port, router=False)


def start_origin(procs: Processes, *, nginx: str, work_dir: Path) -> _routes.Service:
    """nginx, 1 worker, 1 KiB, on core 1 (the baseline and "fork" ports)."""
    origin = _routes.Service("echo", free_port(), free_port())
    run_dir = work_dir / "origin"
    text = _nginx.origin_conf(
        run_dir, baseline_port=origin.baseline_port, fork_port=origin.fork_port
    )
    procs.start("origin", _nginx.argv(nginx, run_dir, _nginx.write(run_dir, text)), cpu=1)
    for port in (origin.baseline_port, origin.fork_port):
        procs.wait_accepting("origin", port)
    return origin


def start_otlp_receiver(procs: Processes) -> int:
    port = free_port()
    script = Path(__file__).with_name("_otlp_sink.py")
    procs.start("otlp-receiver", [sys.executable, str(script), str(port)], cpu=1)
    procs.wait_accepting("otlp-receiver", port)
    return port


def write_traceparent_script(work_dir: Path) -> Path:
    """A wrk script that only adds a `traceparent` header (wrk keeps its fast path)."""
    script = work_dir / "traceparent.lua"
    script.write_text(f'wrk.headers["traceparent"] = "{TRACEPARENT}"\n')
    return script


def write_many_keys_script(work_dir: Path, keys: list[str]) -> Path:
    """A wrk script cycling through `keys`, one per request (the baggage of each)."""
    script = work_dir / "many-keys.lua"
    listed = ",".join(f'"{_routes.baggage(k)}"' for k in keys)
    script.write_text(
        f"local baggages = {{{listed}}}\nlocal i = 0\n"
        "request = function()\n  i = i % #baggages + 1\n"
        '  return wrk.format(nil, nil, {["baggage"] = baggages[i], '
        f'["traceparent"] = "{TRACEPARENT}"}})\nend\n'
    )
    return script
