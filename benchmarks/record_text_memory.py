"""Memory the request records' encoder (`request_wire.RecordText`) keeps once it has written
the records of many sandboxes: its caches of names and span shapes, measured by tracemalloc
(issue 13's bar: 64 MB for the router and the telemetry process together).

    .venv/bin/python benchmarks/record_text_memory.py [--sandboxes 1000]

Each sandbox's requests to three services (`GET` to two, an MCP `tools/call` to the third), a
few rounds of them, written in batches as a report writes them.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.telemetry_profile import TRACEPARENT  # noqa: E402
from sandboxd_router.telemetry.observed import OK, SANDBOX, Observed  # noqa: E402
from sandboxd_router.telemetry.request_wire import RecordText  # noqa: E402

SERVICES = (("echo", None, None), ("api", None, None), ("cluster-mcp", "tools/call", "get_logs"))
ROUNDS = 3
T = TypeVar("T")


def records(sandboxes: int) -> Iterator[tuple[int, Observed]]:
    seq = 0
    for _ in range(ROUNDS):
        for i in range(sandboxes):
            for service, rpc, tool in SERVICES:
                seq += 1
                mcp = rpc is not None
                yield seq, Observed(
                    end=1_765_000_005.0 + seq / 10_000, duration=0.0004, service=service,
                    sandbox=f"live-{i}", routing_key=f"{i:016x}", route=SANDBOX,
                    method="POST" if mcp else "GET", status=200, bytes_in=96, bytes_out=1161,
                    traceparent=TRACEPARENT.decode(), error=OK, injected=False, rpc_method=rpc,
                    tool=tool, rpc_id="7" if mcp else None, seq=seq, path="/mcp" if mcp else "/",
                    session="5f3a" if mcp else None, protocol="2025-06-18" if mcp else None,
                )  # fmt: skip


def kept_by(make: Callable[[], T], feed: Callable[[T, list[Any]], object], batch: list[Any]) -> int:
    """Bytes the object `make()` makes holds after `feed` gave it `batch`, 1,000 at a time (the
    batch made before, so not counted)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    held = make()
    for n in range(0, len(batch), 1000):
        feed(held, batch[n : n + 1000])
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    del held
    return sum(s.size_diff for s in after.compare_to(before, "filename"))


def report(what: str, kept: Callable[[int], int]) -> None:
    """The command line: `kept(sandboxes)` in MB, said as `what`."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sandboxes", type=int, default=1000)
    args = parser.parse_args()
    import sandboxd_router.native as native

    size = kept(args.sandboxes) / 1e6
    print(f"{what}, kept after {args.sandboxes} sandboxes x {len(SERVICES)} services "
          f"(tracemalloc; hot path {native.mode}): {size:.3f} MB")  # fmt: skip


def kept(sandboxes: int) -> int:
    """Bytes a `RecordText` holds after writing `records(sandboxes)`."""
    return kept_by(RecordText, RecordText.texts, list(records(sandboxes)))


if __name__ == "__main__":
    report("request records' encoder", kept)
