"""Slow-loris benchmark: normal traffic through the router while 1,000 slow clients hold on.

Run:  .venv/bin/python benchmarks/slowloris.py [--connections 1000] [--duration 10] [--reps 1]
      [--head-timeout 5]

The router (core 0, a 1,000-sandbox table) runs with a short head deadline (`--head-timeout`,
default 5 s here, 30 s in production) so that the run sees it close slow clients. wrk (c=32,
keep-alive, baggage routed to the fork) measures throughput alone, then again while `n`
slow-loris connections (benchmarks/_loris.py: a head one byte a second, reopened whenever the
router closes one) are held open, interleaved over `--reps`. Prints both medians, their ratio
(bar ≥ 0.9) and how the slow connections ended: 408 from the head deadline, 503 at the
connection limit, or closed. Needs root or nginx and wrk installed, like benchmarks/router.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _routes
from benchmarks._bench import BAGGAGE, SANDBOX, TABLE, Bench, Settings
from benchmarks._loris import Loris
from benchmarks._procs import (
    HarnessError,
    Processes,
    ensure_tools,
    free_port,
    interrupt_on_signals,
    prepare_self,
)
from benchmarks._stats import krps, median


def start_router(bench: Bench, head_timeout: float) -> _routes.Router:
    port = free_port()
    table = bench.work_dir / "routes.json"
    _routes.write_table(table, services=[bench.echo], ports={"echo": port}, n=TABLE)
    router = _routes.Router("router", {"echo": port}, free_port(), TABLE)
    argv = _routes.argv(admin_port=router.admin_port, source=["--routes-file", str(table)])
    bench.procs.start("router", [*argv, "--head-timeout", str(head_timeout)], cpu=0)
    _routes.wait_ready(bench.procs, router)
    return router


def measure(
    bench: Bench, port: int, args: argparse.Namespace
) -> tuple[list[float], list[float], Loris]:
    """Interleaved: wrk alone, then wrk beside a fresh set of slow clients, `reps` times."""
    alone: list[float] = []
    beside: list[float] = []
    bench.wrk(port, 32, 1)  # warm-up
    for _ in range(args.reps):
        alone.append(bench.wrk(port, 32, args.duration).rps)
        loris = Loris(port, n=args.connections)
        loris.start()
        print(f"  {loris.open} slow connections open; measuring …", flush=True)
        result = bench.wrk(port, 32, args.duration)
        loris.stop()
        beside.append(result.rps)
        if result.errors:
            bench.problems.append(f"{result.errors} errors in normal traffic beside slow clients")
    return alone, beside, loris


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--head-timeout", type=float, default=5)
    args = parser.parse_args(argv)
    interrupt_on_signals()
    try:
        prepare_self()
        tools = ensure_tools()
    except HarnessError as e:
        print(f"slowloris: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="sandboxd-slowloris-") as tmp:
        work_dir = Path(tmp)
        work_dir.chmod(0o755)  # nginx workers run as nobody when we are root
        (work_dir / "logs").mkdir()
        procs = Processes(work_dir / "logs")
        bench = Bench(Settings(router=False), tools, work_dir, procs)
        try:
            bench.start_servers()
            router = start_router(bench, args.head_timeout)
            port = router.ports["echo"]
            print(f"router: --head-timeout {args.head_timeout:g} (the benchmark's; default 30), "
                  f"key routed to sandbox {SANDBOX}; baggage: {BAGGAGE}")  # fmt: skip
            alone, beside, loris = measure(bench, port, args)
        except HarnessError as e:
            print(f"slowloris: {e}", file=sys.stderr)
            return 1
        finally:
            procs.stop_all()
    ratio = median(beside) / median(alone)
    print(f"\nThroughput, wrk -t1 c=32, {args.duration:g} s runs, median of {args.reps}:")
    print(f"  alone:                            {krps(median(alone))} req/s")
    print(f"  beside {args.connections} slow-loris connections: {krps(median(beside))} req/s")
    print(f"  ratio: {ratio:.2f}; bar ≥ 0.90: {'PASS' if ratio >= 0.9 else 'FAIL'}")
    ended = dict(loris.ended)
    print(f"Slow connections (last run) closed by the {args.head_timeout:g} s head deadline "
          f"(408): {ended.pop('408', 0)}; other endings: {ended or 'none'}")  # fmt: skip
    for problem in bench.problems:
        print(f"  problem: {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
