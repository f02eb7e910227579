"""Memory the OTLP span encoder (`otlpwire.SpanEncoder`) keeps once it has encoded the spans of
many sandboxes: its caches of span shapes, sandboxes, paths and sizes, measured by tracemalloc
as `record_text_memory.py` measures the request records' encoder (issue 13's bar: 64 MB for
the router and the telemetry process together).

    .venv/bin/python benchmarks/otlp_memory.py [--sandboxes 1000]

The same requests as `record_text_memory.py` (each sandbox's to three services, a few rounds),
encoded in batches as the exporter encodes a read of the ring.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.record_text_memory import SERVICES, records  # noqa: E402
from sandboxd_router.telemetry.otlpwire import SpanEncoder  # noqa: E402


def kept(sandboxes: int) -> int:
    """Bytes a `SpanEncoder` holds after encoding `records(sandboxes)` (the records themselves
    made before, so not counted)."""
    batch = [o for _, o in records(sandboxes)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    encoder = SpanEncoder({"service.name": "sandboxd-router"})
    for n in range(0, len(batch), 1000):
        encoder.spans(batch[n : n + 1000])
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return sum(s.size_diff for s in after.compare_to(before, "filename"))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sandboxes", type=int, default=1000)
    args = parser.parse_args()
    import sandboxd_router.native as native

    size = kept(args.sandboxes) / 1e6
    print(f"OTLP span encoder, kept after {args.sandboxes} sandboxes x {len(SERVICES)} "
          f"services (tracemalloc; hot path {native.mode}): {size:.3f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
