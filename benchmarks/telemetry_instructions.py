"""Instructions the telemetry process spends per request, stage by stage, counted by callgrind:
the figure to watch when changing it (its wall-clock time on these shared VMs swings by tens
of percent; instruction counts do not).

    .venv/bin/python benchmarks/telemetry_instructions.py [--records 30000]

The default configuration's work (`benchmarks/telemetry_profile.py`'s records: `GET /` with a
live sandbox's key, 1,000 sandboxes in turn, a `traceparent`, 200, 1 KiB): the ring read and
decoded in batches as the process reads it, the access log (to a file), the signals' tally,
then one report's body (the request records queued, at most `MAX_PENDING`, and the buckets),
and the same body again (as a report costs once the names and span shapes are known).
Each stage is added in a process of its own under `valgrind --tool=callgrind`; a stage's count
is the difference from the process without it, divided by the records (so the objects it
frees and the collector's passes count where they happen). The processes fill the same ring
the same way first, with one string-hash seed.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.telemetry_profile import GC_THRESHOLDS, TRACEPARENT  # noqa: E402
from sandboxd_router.record import Recorder  # noqa: E402

STAGES = ("fill", "ring", "access log", "tally", "report body", "the same body again")
T0 = 1_765_000_000.0  # a multiple of 10: the requests end from T0 + 5 on (< 10 s of them)
_TOTAL = re.compile(rb"summary: (\d+)")


def filled_ring(n: int) -> tuple[Recorder, int, int]:
    """`telemetry_profile.filled_ring`'s records on a clock of their own: 28,000 requests a
    second from the middle of a 10-second window on (a real clock lets a run's requests
    straddle two windows or not, which moves the tally's and the report's counts)."""
    recorder = Recorder(max(1 << 16, n + 1))
    names_r, names_w = os.pipe()
    start = recorder.attach(names_w)
    os.set_blocking(names_r, False)
    now = [0.0]

    def clock() -> float:
        now[0] += 1 / 28_000
        return now[0]

    recorder._clock = clock
    recorder._wall = T0 + 5
    for i in range(n):
        recorder.write(
            now[0] - 0.0004, recorder.ids("echo", f"live-{i % 1000}", f"{i % 1000:016x}"),
            False, b"GET", 200, 96, 1161, TRACEPARENT, 0,
        )  # fmt: skip
    return recorder, names_r, start


def run_stages(last: int, n: int) -> None:
    """In this process: fill a ring of `n` records, then the stages up to `last` (an index of
    `STAGES`)."""
    from sandboxd_router.telemetry.accesslog import AccessLogSink
    from sandboxd_router.telemetry.ring import RingReader
    from sandboxd_router.telemetry.signals import SignalsSink

    gc.set_threshold(*GC_THRESHOLDS)  # as the telemetry process runs
    recorder, names_r, start = filled_ring(n)
    with tempfile.TemporaryDirectory() as tmp:
        log = AccessLogSink(str(Path(tmp) / "access.log"))
        signals = SignalsSink(url="http://127.0.0.1:9", token="t")
        reader = RingReader(recorder.fd, names_r, start)
        while last >= 1 and (batch := reader.read()):
            if last >= 2:
                log.add_all(batch)
            if last >= 3:
                signals.add_all(batch)
        log.flush()
        if last >= 4:
            signals.body()
        if last >= 5:  # (what a report costs once each sandbox's names and shapes are known)
            signals.body()


def counted(last: int, n: int, work: Path) -> int:
    return callgrind_total(
        [sys.executable, __file__, "--inner", str(last), "--records", str(n)],
        work / f"stage{last}.callgrind",
    )


def callgrind_total(argv: list[str], out: Path) -> int:
    """The instructions `argv` ran, all told, under callgrind (a fixed string-hash seed)."""
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run(argv, check=True, capture_output=True, env=env)
    found = _TOTAL.search(out.read_bytes())
    if found is None:
        raise SystemExit(f"no total in {out}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner is not None:
        run_stages(args.inner, args.records)
        return
    import sandboxd_router.native as native

    n = args.records
    with tempfile.TemporaryDirectory() as tmp:
        totals = [counted(last, n, Path(tmp)) for last in range(len(STAGES))]
    print(f"telemetry process, instructions per request (callgrind; {n} records; the router's "
          f"hot path {native.mode})")  # fmt: skip
    for name, before, after in zip(STAGES[1:], totals, totals[1:], strict=False):
        print(f"  {name:40} {(after - before) / n:9,.0f}")
    print(f"  {'in all (one body)':40} {(totals[-2] - totals[0]) / n:9,.0f}")


if __name__ == "__main__":
    main()
