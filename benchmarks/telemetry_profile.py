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
- spans (OTLP on only): `records.wire` + `otlp.to_span` + the OTLP/protobuf encoding the SDK's
  exporter does, per span.

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
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandboxd_router.record import Recorder  # noqa: E402
from sandboxd_router.telemetry import otlp, records  # noqa: E402
from sandboxd_router.telemetry.accesslog import AccessLogSink  # noqa: E402
from sandboxd_router.telemetry.observed import Observed  # noqa: E402
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
            time.perf_counter() - 0.0004, "echo", f"live-{i % 1000}", f"{i % 1000:016x}",
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


def fed(sink: AccessLogSink | SignalsSink, batch: list[Observed]) -> None:
    """As the telemetry process feeds it (`__main__._feed`): in reads of at most `BATCH`."""
    for at in range(0, len(batch), BATCH):
        sink.add_all(batch[at : at + BATCH])


def report_body(sink: SignalsSink) -> int:
    return len(sink.body())


def spans(batch: list[Observed]) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create({"service.name": "sandboxd-router"})
    made = [otlp.to_span(records.wire(records.Pending(0, o)), resource) for o in batch]
    encode_spans(made).SerializeToString()


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
    traced = best(lambda: spans(batch[:10_000]), args.reps) / 10_000 * n
    rows = [
        ("ring: read + decode", ring),
        ("access log: add + flush", log),
        ("signals: add", add),
        (f"signals: a report's body ({queued} request records queued, {sink.buckets} buckets)",
         body),
        ("spans (OTLP on): wire + to_span + protobuf", traced),
    ]  # fmt: skip
    print(f"telemetry process, per request (best of {args.reps}; {n} records, 1,000 sandboxes)")
    for label, seconds in rows:
        print(f"  {label:72} {seconds / n * 1e6:6.2f} µs")
    default = ring + log + add + body
    print(f"  {'default configuration (no OTLP), in all':72} {default / n * 1e6:6.2f} µs")
    print(f"  {'with OTLP':72} {(default + traced) / n * 1e6:6.2f} µs")
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
