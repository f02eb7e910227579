"""Memory the OTLP span encoder (`otlpwire.SpanEncoder`) keeps once it has encoded the spans of
many sandboxes: its caches of span shapes, sandboxes, paths and sizes, measured by tracemalloc
as `record_text_memory.py` measures the request records' encoder (issue 13's bar: 64 MB for
the router and the telemetry process together).

    .venv/bin/python benchmarks/otlp_memory.py [--sandboxes 1000]

The same requests as `record_text_memory.py` (each sandbox's to three services, a few rounds),
encoded in batches as the exporter encodes a read of the ring.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.record_text_memory import kept_by, records, report  # noqa: E402
from sandboxd_router.telemetry.otlpwire import SpanEncoder  # noqa: E402


def kept(sandboxes: int) -> int:
    """Bytes a `SpanEncoder` holds after encoding `records(sandboxes)`."""
    batch = [o for _, o in records(sandboxes)]
    return kept_by(
        lambda: SpanEncoder({"service.name": "sandboxd-router"}), SpanEncoder.spans, batch
    )


if __name__ == "__main__":
    report("OTLP span encoder", kept)
