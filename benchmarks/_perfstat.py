"""What one process costs over one run, from `perf stat` (software events and tracepoints: these
VMs expose no hardware counters; the ones a machine does expose are counted too) and /proc, and
how busy each core was meanwhile — with the share no process of ours accounts for (neighbours
on a shared VM: a run they crowd is noise, not a figure).
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
SOFTWARE = (
    "task-clock",
    "context-switches",
    "cpu-migrations",
    "page-faults",
    "raw_syscalls:sys_enter",  # system calls
    "syscalls:sys_enter_epoll_wait",  # event loop iterations (uvloop's epoll calls)
    "syscalls:sys_enter_epoll_pwait",
)
HARDWARE = ("cycles", "instructions", "cache-misses", "cache-references")


@dataclass
class Sample:
    """One process's figures over one run: CPU from /proc, `perf stat` counts by event."""

    user: float = 0.0  # seconds
    system: float = 0.0
    voluntary: int = 0  # context switches
    involuntary: int = 0
    events: dict[str, float] = field(default_factory=dict)

    @property
    def cpu(self) -> float:
        return self.user + self.system

    @property
    def epolls(self) -> float:
        return self.events.get("syscalls:sys_enter_epoll_wait", 0) + self.events.get(
            "syscalls:sys_enter_epoll_pwait", 0
        )


def events() -> tuple[str, ...]:
    """The software events, and the hardware events `perf stat` can count here."""
    done = subprocess.run(
        ["perf", "stat", "-x,", "-e", ",".join(HARDWARE), "--", "true"],
        capture_output=True,
        text=True,
    )
    counted = tuple(
        fields[2]
        for fields in (line.split(",") for line in done.stderr.splitlines())
        if len(fields) > 2 and fields[2] in HARDWARE and not fields[0].startswith("<")
    )
    return SOFTWARE + counted


def times(pid: int) -> tuple[float, float, int, int]:
    """(user s, system s, voluntary switches, involuntary switches) of `pid` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    status = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (
        int(stat[11]) / TICKS,
        int(stat[12]) / TICKS,
        int(status["voluntary_ctxt_switches"]),
        int(status["nonvoluntary_ctxt_switches"]),
    )


def cpu_of(pid: int) -> float:
    """utime + stime of `pid` in seconds (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(stat[11]) + int(stat[12])) / TICKS


def cores() -> list[list[float]]:
    """Per core: user, nice, system, idle, iowait, irq, softirq, steal (seconds so far)."""
    out = []
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            out.append([int(v) / TICKS for v in fields[:8]])
    return out


def busy(before: list[list[float]], after: list[list[float]]) -> list[float]:
    """Seconds each core was not idle between two `cores()`."""
    out = []
    for b, a in zip(before, after, strict=True):
        delta = [y - x for x, y in zip(b, a, strict=True)]
        out.append(sum(delta) - delta[3] - delta[4])
    return out


class Counting:
    """`perf stat` attached to some processes, from `start` until `stop`."""

    def __init__(self, pids: list[int], events: tuple[str, ...], work_dir: Path) -> None:
        self.pids = pids
        self.events = events
        self.outs = [work_dir / f"perf-{pid}.csv" for pid in pids]
        self._perf: list[subprocess.Popen[bytes]] = []
        self._before: list[tuple[float, float, int, int]] = []

    def start(self) -> None:
        every = ",".join(self.events)
        self._perf = [
            subprocess.Popen(
                ["perf", "stat", "-x,", "-o", str(out), "-e", every, "-p", str(pid)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid, out in zip(self.pids, self.outs, strict=True)
        ]
        self._before = [times(pid) for pid in self.pids]

    def stop(self) -> list[Sample]:
        after = [times(pid) for pid in self.pids]
        for perf in self._perf:
            perf.send_signal(signal.SIGINT)
        for perf in self._perf:
            perf.wait(10)
        return [
            Sample(a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3], _read(out))
            for b, a, out in zip(self._before, after, self.outs, strict=True)
        ]


def _read(out: Path) -> dict[str, float]:
    """`perf stat -x,` output: value, unit, event, ..."""
    values = {}
    for line in out.read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and not line.startswith("#"):
            try:
                values[fields[2]] = float(fields[0])
            except ValueError:  # "<not counted>"
                continue
    return values
