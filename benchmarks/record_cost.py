"""The request path's cost of recording one request: `Recorder.write`, measured alone.

Run:  .venv/bin/python benchmarks/record_cost.py [--records 1000000] [--repeat 5]

Writes records into a real ring (a memfd, as the router does; no reader attached, so the names
pipe is closed and nothing waits) with the hot path as it is built (compiled with mypyc, or
interpreted: printed). Each case is timed as a loop of calls with the arguments of one kind of
request, minus the same loop calling an empty function with the same arguments (the loop and
the call's own cost, which the router's compiled caller does not pay as such). The best of
`--repeat` runs is printed, in ns per record. Goal (issue 13): ≤ 1 µs per record, compiled.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandboxd_router import native  # noqa: E402
from sandboxd_router.faults import Fault  # noqa: E402
from sandboxd_router.record import Recorder  # noqa: E402

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
LATENCY = Fault("pr-1", {"id": "slow-describe", "service": "mcp", "kind": "latency"})


def cases(recorder: Recorder) -> dict[str, tuple[Any, ...]]:
    """The arguments of each kind of request; the names' ids as the router keeps them on its
    route decision (`Recorder.ids`, once per decision: not a request's cost)."""
    started = time.perf_counter()
    http = (started, recorder.ids("echo", "", ""), False, b"GET", 200, 0, 512, None, 0)
    sandbox = (
        started,
        recorder.ids("echo", "pr-1", "key1aaaaaaaaaaa"),
        True,
        b"GET",
        200,
        0,
        512,
        TRACEPARENT,
        0,
    )
    mcp = (*sandbox[:3], b"POST", 200, 180, 900, TRACEPARENT, 0, None, 0.0, b"tools/call",
           b"describe_pod", b"7")  # fmt: skip
    faulted = (*mcp[:9], [LATENCY], 0.0001, *mcp[11:])
    return {
        "http, no key, no traceparent": http,
        "http, sandbox key + traceparent": sandbox,
        "mcp tools/call (rpc facts)": mcp,
        "mcp tools/call + 1 fault applied": faulted,
    }


def per_call(fn: Callable[..., None], args: tuple[Any, ...], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn(*args)
    return (time.perf_counter() - start) / n


def empty(*args: Any) -> None:
    pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--slots", type=int, default=1 << 16)
    args = p.parse_args()
    recorder = Recorder(args.slots)
    print(f"hot path: {native.mode}; ring: {args.slots} slots; {args.records:,} records a run, "
          f"best of {args.repeat}")  # fmt: skip
    print(f"{'case':<36} {'write()':>10} {'empty call':>11} {'net':>9}")
    for name, case in cases(recorder).items():
        recorder.write(*case)  # (its names interned once, as in a router that runs a while)
        write = min(per_call(recorder.write, case, args.records) for _ in range(args.repeat))
        base = min(per_call(empty, case, args.records) for _ in range(args.repeat))
        print(
            f"{name:<36} {write * 1e9:>8.0f}ns {base * 1e9:>9.0f}ns {(write - base) * 1e9:>7.0f}ns"
        )
    recorder.close()


if __name__ == "__main__":
    main()
