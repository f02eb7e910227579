"""What following one request costs the router's telemetry process in the signals sink.

Run:  .venv/bin/python benchmarks/signals_cost.py [--requests N] [--reps R]

Method: a mix of synthetic `Observed` requests (half baseline, half with a sandbox's key; a
third MCP `tools/call`; one in ten injected; 30 sandboxes x 3 services, the end times over a
minute), fed to `SignalsSink.add` in a loop; the best of R runs, in µs per request. Then what
a report costs per entry, without the network: encoding the request records (with their spans)
and the buckets as one post's body would. The sum bounds how many requests per second one
telemetry process can follow. Bar: `add` well under 10 µs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from random import Random

import orjson

from sandboxd_router.telemetry import records
from sandboxd_router.telemetry.observed import (
    BASELINE,
    ERRORS,
    OK,
    SANDBOX,
    Fault,
    Observed,
)
from sandboxd_router.telemetry.signals import SignalsSink

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def requests(n: int, *, seed: int = 1) -> list[Observed]:
    rng = Random(seed)
    now = time.time()
    out = []
    for i in range(n):
        sandboxed = i % 2 == 0
        injected = i % 10 == 0 and sandboxed
        mcp = i % 3 == 0
        out.append(
            Observed(
                end=now + rng.random() * 60,
                duration=rng.lognormvariate(-7, 1),
                service=f"svc-{i % 3}",
                sandbox=f"pr-{i % 30}" if sandboxed else "",
                routing_key=f"key-{i % 30}" if sandboxed else "",
                route=SANDBOX if sandboxed else BASELINE,
                method="POST" if mcp else "GET",
                status=500 if i % 50 == 0 else 200,
                bytes_in=120,
                bytes_out=800,
                traceparent=TRACEPARENT if i % 4 else None,
                error=ERRORS[0] if i % 50 == 0 else OK,
                injected=injected,
                faults=(Fault("latency", "slow-describe"),) if injected else (),
                injected_at=0.0001 if injected else 0.0,
                rpc_method="tools/call" if mcp else None,
                tool=f"tool-{i % 7}" if mcp else None,
                rpc_id=str(i) if mcp else None,
            )
        )
    return out


def per_add(batch: list[Observed], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        sink = SignalsSink(url="http://127.0.0.1:9", token="t", max_pending=len(batch))
        add = sink.add
        t0 = time.perf_counter()
        for o in batch:
            add(o)
        best = min(best, time.perf_counter() - t0)
    return best / len(batch) * 1e6


def per_record(batch: list[Observed], reps: int) -> float:
    pending = [records.Pending(i, "00f067aa0ba902b7", o) for i, o in enumerate(batch)]
    return best(lambda: orjson.dumps([records.wire(p) for p in pending]), reps) / len(batch)


def per_bucket(batch: list[Observed], reps: int) -> tuple[float, int]:
    sink = SignalsSink(url="http://127.0.0.1:9", token="t")
    for o in batch:
        sink.add(o)
    buckets = sink._buckets  # a benchmark may look inside
    took = best(lambda: orjson.dumps([b.wire(k) for k, b in buckets.items()]), reps)
    return took / len(buckets), len(buckets)


def best(run: Callable[[], object], reps: int) -> float:
    """µs, the best of `reps` runs."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    batch = requests(args.requests)
    add = per_add(batch, args.reps)
    record = per_record([o for o in batch if o.sandbox], args.reps)
    bucket, n = per_bucket(batch, args.reps)
    print(f"add():                    {add:6.2f} µs per request (best of {args.reps})")
    print(f"request record, encoded:  {record:6.2f} µs per sandboxed request")
    print(f"bucket, encoded:          {bucket:6.2f} µs per bucket ({n} buckets)")
    total = add + record / 2
    print(f"one process follows about {1e6 / total:,.0f} requests/s (add + half of them recorded)")


if __name__ == "__main__":
    main()
