"""Instructions the telemetry process spends per span exported over OTLP, counted by callgrind
(wall-clock time on these shared VMs swings by tens of percent; instruction counts do not).

    .venv/bin/python benchmarks/otlp_instructions.py [--records 30000]

`telemetry_instructions.py`'s records (`GET /` with a live sandbox's key, 1,000 sandboxes in
turn, a `traceparent`, 200, 1 KiB), read from the ring, then, each stage in a process of its
own under `valgrind --tool=callgrind` (every thread counted; the receiver, `_otlp_sink.py`, is
another process and is not): the spans encoded (`SpanEncoder.spans`, by read, as `SpanExport`
does), then the whole export (`SpanSink.add_all` by read, the exporter's thread posting batches
to the live receiver until every span is accepted). A stage's count is the difference from the
process without it, divided by the records; the span shapes and each sandbox's attribute are
learnt first, as a running process has.
"""

from __future__ import annotations

import argparse
import gc
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.telemetry_instructions import callgrind_total, filled_ring  # noqa: E402
from benchmarks.telemetry_profile import GC_THRESHOLDS, free_port  # noqa: E402

STAGES = ("read", "encode", "export (encode + post)")


def run_stage(stage: int, n: int, port: int) -> None:
    """In this process: fill a ring of `n` records, read it, then `STAGES[stage]`."""
    from sandboxd_router.telemetry import otlp
    from sandboxd_router.telemetry.otlppost import Poster, Settings
    from sandboxd_router.telemetry.ring import RingReader

    gc.set_threshold(*GC_THRESHOLDS)  # as the telemetry process runs
    recorder, names_r, start = filled_ring(n)
    reader = RingReader(recorder.fd, names_r, start)
    reads = []
    while batch := reader.read():
        reads.append(batch)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    encoder = otlp.encoder(env)
    for batch in reads:  # each sandbox's shape learnt (1,000 of them), as a running process has
        encoder.spans(batch[:1000])
    if stage == 1:
        for batch in reads:
            encoder.spans(batch)
    elif stage == 2:
        export = otlp.SpanExport(encoder, Poster(Settings.from_env(env)), max_queue=n)
        sink = otlp.SpanSink(export)
        for batch in reads:
            sink.add_all(batch)
        export.close(timeout=600)
        assert export.exported == n, (export.exported, export.dropped, export.failed)


def counted(stage: int, n: int, port: int, work: Path) -> int:
    return callgrind_total(
        [sys.executable, __file__, "--inner", str(stage), "--records", str(n), "--port", str(port)],
        work / f"stage{stage}.callgrind",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner is not None:
        run_stage(args.inner, args.records, args.port)
        return
    n, port = args.records, free_port()
    receiver = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "_otlp_sink.py"),
                                 str(port)])  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _accepting(port):
            time.sleep(0.05)
        with tempfile.TemporaryDirectory() as tmp:
            totals = [counted(stage, n, port, Path(tmp)) for stage in range(len(STAGES))]
    finally:
        receiver.terminate()
        receiver.wait()
    print(f"OTLP spans, instructions per span (callgrind; {n} records, 1,000 sandboxes)")
    for name, total in zip(STAGES[1:], totals[1:], strict=True):
        print(f"  {name:40} {(total - totals[0]) / n:9,.0f}")


def _accepting(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    main()
