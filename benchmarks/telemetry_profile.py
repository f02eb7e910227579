"""Where the router's telemetry process spends its time, per request, stage by stage.

Run:  .venv/bin/python benchmarks/telemetry_profile.py [--records 60000] [--reps 3] [--profile]

A real ring (`Recorder`, a memfd, as the router makes it) filled with the signals benchmark's
request — `GET /` with a live sandbox's key (1,000 sandboxes in turn), a `traceparent`, 200, a
1 KiB answer — and a real `RingReader` on it, as the telemetry process reads it. Each stage is
timed alone over the same records, the best of `--reps`, in µs of this process's CPU time per
request (`time.process_time`: on a shared machine the time it waits for a core is not its
cost):

- ring: `RingReader.read` (copy, check, decode into `Observed`);
- access log: `AccessLogSink.add_all` (by batch, as the process feeds it) and its flush to a file;
- signals: `SignalsSink.add_all`, then what its reports cost (the request records and the buckets
  encoded as a post's body, `SignalsSink.body`; the request records a sandbox keeps are capped
  per sandbox, so at most that many are encoded per report);
- spans (OTLP on only): the CPU time of this process (all threads) to encode the spans
  (`otlpwire`, each sandbox's span shape already learnt) and post them in batches to a live
  receiver (`_otlp_sink.py`, not counted), every span accepted, fed by reads as the process
  does (`SpanSink.add_all`); the queue is big enough for all of them (a real process drops
  and counts what does not fit). Until `otlpwire`: the old `records.wire` + the SDK's
  `ReadableSpan` + its OTLP/protobuf encoding, ~43 µs a span;
- spans, endpoint down: the same reads with nothing listening at the endpoint, once the
  exporter knows it is down (every span dropped and counted before it is encoded).

`--profile`: cProfile of reading and feeding the default sinks (access log + signals), top
functions by own time. The sum bounds how many requests a second one telemetry process follows
on a core; with the router on the same core, each µs here is taken from the request path.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandboxd_router.record import Recorder  # noqa: E402
from sandboxd_router.telemetry import otlp  # noqa: E402
from sandboxd_router.telemetry.accesslog import AccessLogSink  # noqa: E402
from sandboxd_router.telemetry.observed import Observed  # noqa: E402
from sandboxd_router.telemetry.otlppost import Poster, Settings  # noqa: E402
from sandboxd_router.telemetry.ring import BATCH, RingReader  # noqa: E402
from sandboxd_router.telemetry.signals import SignalsSink  # noqa: E402

GC_THRESHOLDS = (50_000, 50, 100)
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def filled_ring(n: int) -> tuple[Recorder, int, int]:
    """A ring of `n` records and the read end of its names pipe, and the first seq."""
    recorder = Recorder(max(1 << 16, n + 1))
    names_r, names_w = os.pipe()
    start = recorder.attach(names_w)
    os.set_blocking(names_r, False)
    for i in range(n):
        recorder.write(
            time.perf_counter() - 0.0004,
            recorder.ids("echo", f"live-{i % 1000}", f"{i % 1000:016x}"),
            False, b"GET", 200, 96, 1161, TRACEPARENT, 0,
        )  # fmt: skip
    return recorder, names_r, start


def decoded(recorder: Recorder, names_r: int, start: int) -> tuple[float, list[Observed]]:
    """Seconds to read and decode every record, and the records."""
    reader = RingReader(recorder.fd, names_r, start)
    out: list[Observed] = []
    t0 = time.process_time()
    while batch := reader.read():
        out += batch
    return time.process_time() - t0, out


def best(run: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        run()
        times.append(time.process_time() - t0)
    return min(times)


def access_log(batch: list[Observed], path: Path) -> None:
    sink = AccessLogSink(str(path))
    fed(sink, batch)
    sink.flush()


def signals(batch: list[Observed]) -> SignalsSink:
    sink = SignalsSink(url="http://127.0.0.1:9", token="t")
    fed(sink, batch)
    return sink


def fed(sink: AccessLogSink | SignalsSink | otlp.SpanSink, batch: list[Observed]) -> None:
    """As the telemetry process feeds it (`__main__._feed`): in reads of at most `BATCH`."""
    for at in range(0, len(batch), BATCH):
        sink.add_all(batch[at : at + BATCH])


def report_body(sink: SignalsSink) -> int:
    return len(sink.body())


def spans(batch: list[Observed], reps: int) -> float:
    """CPU seconds of this process (every thread) to encode `batch` as spans and post them to a
    live OTLP receiver (`_otlp_sink.py`, another process) until all were accepted, the best of
    `reps` after a first pass (which learns each sandbox's span shape: ~30 µs once)."""
    port = free_port()
    sink = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "_otlp_sink.py"), str(port)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _accepting(port):
            time.sleep(0.05)
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
        encoder = otlp.encoder(env)
        times = []
        for _ in range(reps + 1):
            export = otlp.SpanExport(encoder, Poster(Settings.from_env(env)), max_queue=len(batch))
            cpu = time.process_time()
            fed(otlp.SpanSink(export), batch)
            export.close(timeout=60)
            times.append(time.process_time() - cpu)
            assert export.exported == len(batch), (export.exported, export.dropped, export.failed)
        return min(times[1:])
    finally:
        sink.terminate()
        sink.wait()


def spans_down(batch: list[Observed], reps: int) -> float:
    """CPU seconds of this process to follow `batch` with the OTLP endpoint down (nothing
    listens), once the exporter knows it: every span dropped and counted, none encoded."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
           "OTEL_EXPORTER_OTLP_TIMEOUT": "0.5"}  # fmt: skip
    export = otlp.SpanExport(otlp.encoder(env), Poster(Settings.from_env(env)), delay=0.05)
    sink = otlp.SpanSink(export)
    export.add(batch[0])
    deadline = time.monotonic() + 30
    while not export.down and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        return best(lambda: fed(sink, batch), reps)
    finally:
        export.close(timeout=1)
        assert export.down, "the endpoint was up"
        assert export.exported == 0


def _accepting(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    gc.set_threshold(*GC_THRESHOLDS)  # as the telemetry process runs (telemetry/__main__.py)
    n = args.records
    ring = min(decoded(*filled_ring(n))[0] for _ in range(args.reps))
    _, batch = decoded(*filled_ring(n))
    with tempfile.TemporaryDirectory() as tmp:
        log = best(lambda: access_log(batch, Path(tmp) / "access.log"), args.reps)
    add = best(lambda: signals(batch), args.reps)
    sink = signals(batch)
    queued = sink.pending_requests
    body = best(lambda: report_body(sink), args.reps)
    traced = spans(batch, args.reps)
    down = spans_down(batch, args.reps)
    rows = [
        ("ring: read + decode", ring),
        ("access log: add + flush", log),
        ("signals: add", add),
        (f"signals: a report's body ({queued} request records queued, {sink.buckets} buckets)",
         body),
        ("spans (OTLP on): encode + post to a live receiver, CPU", traced),
        ("spans (OTLP on, endpoint down): dropped and counted, CPU", down),
    ]  # fmt: skip
    print(f"telemetry process, per request (best of {args.reps}; {n} records, 1,000 sandboxes)")
    for label, seconds in rows:
        print(f"  {label:72} {seconds / n * 1e6:6.2f} µs")
    default = ring + log + add + body
    print(f"  {'default configuration (no OTLP), in all':72} {default / n * 1e6:6.2f} µs")
    print(f"  {'with OTLP':72} {(default + traced) / n * 1e6:6.2f} µs")
    print(f"  {'with OTLP, endpoint down':72} {(default + down) / n * 1e6:6.2f} µs")
    if args.profile:
        profile(n)


def profile(n: int) -> None:
    recorder, names_r, start = filled_ring(n)
    with tempfile.TemporaryDirectory() as tmp:
        log, sink = AccessLogSink(str(Path(tmp) / "access.log")), SignalsSink(url="x", token="t")
        reader = RingReader(recorder.fd, names_r, start)
        profiler = cProfile.Profile()
        profiler.enable()
        while batch := reader.read():
            log.add_all(batch)
            sink.add_all(batch)
        log.flush()
        report_body(sink)
        profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
