"""Router benchmark: sandboxd-router beside nginx doing the same baggage routing, and direct.

Run:  .venv/bin/python benchmarks/router.py [--quick] [--no-router] [--reps 3] [--duration 3]
      [--faults 3] [--populate] [--only throughput,latency,table,sse,propagation,memory]

Method (shared/reference/performance.md): the proxy pinned to core 0; wrk, the origin (nginx,
1 worker, `return 200` with 1 KiB), the SSE origin and this script's own clients on core 1;
HTTP/1.1 keep-alive; every request carries `baggage: userid=alice,sandbox=<key>,tenant=acme`;
route tables of 1,000 sandboxes unless a bar says otherwise; interleaved repetitions (router,
nginx, direct, router, …); medians. Every router here runs with every recording off
(`--record off`: no record ring, no telemetry process, no access log), as DESIGN §9's router
bars were set; what recording costs is benchmarks/signals.py's (issue 13). Prints one line per
DESIGN §9 router bar with PASS/FAIL, and exits 0 whatever the bars say: non-zero only when the
harness itself failed.

Needs root, or nginx and wrk already installed: it installs the Debian packages `nginx` and
`wrk` when missing. It never touches the system nginx service: every server here is its own
process, with its files in one temp dir, and all of them are stopped at the end (also on
Ctrl-C, SIGTERM or a failure). Only loopback traffic; every load run is bounded in time.
`--no-router` runs nginx and direct alone (to check the harness without a router).
`--faults N` gives every sandbox of every route table N faults on every service that the
benchmark's requests match none of (`_routes.decoys`; checked to fire on a request that does
match); the propagation scenario then fills the control plane with 1,000 such sandboxes and
also times a PATCH of faults (`--populate` alone: the same 1,000 sandboxes without faults, the
peer to compare with). `--only` runs the named scenarios (the routing checks always).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _routes, _stats  # noqa: E402
from benchmarks._bench import Bar, Bench, Settings  # noqa: E402
from benchmarks._latency import latency, sse  # noqa: E402
from benchmarks._memory import memory  # noqa: E402
from benchmarks._procs import (  # noqa: E402
    HarnessError,
    Processes,
    ensure_tools,
    interrupt_on_signals,
    machine_load,
    prepare_self,
)
from benchmarks._propagation import propagation  # noqa: E402
from benchmarks._throughput import table_size, throughput  # noqa: E402


def settings(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition, shorter runs")
    parser.add_argument("--no-router", action="store_true", help="only nginx and direct")
    parser.add_argument(
        "--reps", type=int, help="interleaved repetitions (default 3; 5 for latency at c=1)"
    )
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 3)")
    parser.add_argument(
        "--faults", type=int, default=0, help="decoy faults per sandbox per service (default 0)"
    )
    parser.add_argument(
        "--populate",
        action="store_true",
        help="propagation: first 1,000 sandboxes in the control plane (implied by --faults)",
    )
    parser.add_argument("--only", default="", help=f"comma-separated, of: {', '.join(SCENARIOS)}")
    args = parser.parse_args(argv)
    only = frozenset(filter(None, args.only.split(",")))
    if only - set(SCENARIOS) or args.faults < 0:
        parser.error(f"--only takes {', '.join(SCENARIOS)}; --faults a count ≥ 0")
    base = Settings.quick() if args.quick else Settings()
    return base.replace(
        router=not args.no_router,
        reps=args.reps or base.reps,
        latency_reps=args.reps or base.latency_reps,
        duration=args.duration or base.duration,
        faults=args.faults,
        populate=args.populate or args.faults > 0,
        only=only,
    )


SCENARIOS = {  # name → (scenario, needs the router), in the order of DESIGN §9's bars
    "throughput": (throughput, False),
    "latency": (latency, False),
    "table": (table_size, True),
    "sse": (sse, False),
    "propagation": (propagation, True),
    "memory": (memory, True),
}


def run(bench: Bench) -> list[Bar]:
    bench.start_servers()
    bench.verify_routing()
    bars = []
    for name, (scenario, needs_router) in SCENARIOS.items():
        if bench.config.runs(name) and (bench.config.router or not needs_router):
            bars += scenario(bench)
    return bars


def report(bars: list[Bar], problems: list[str], config: Settings) -> None:
    print(f"\nDESIGN §9 router bars ({config.table()})")
    if not bars:
        print("  (none: the router was not run)")
    for i, bar in enumerate(bars, 1):
        verdict = "PASS" if bar.ok else "FAIL"
        print(f"  {i}. {bar.title} [{config.table()}]: {bar.measured}; bar {bar.bar}: {verdict}")
    for problem in problems:
        print(f"  problem: {problem}")


def main(argv: list[str] | None = None) -> int:
    config = settings(argv)
    interrupt_on_signals()
    try:
        prepare_self()
        tools = ensure_tools()
    except (HarnessError, subprocess.CalledProcessError) as e:
        print(f"router benchmark: {e}", file=sys.stderr)
        return 2
    print(f"router benchmark: {config}")
    print(f"percentiles: {_stats.BACKEND}; baggage: {_routes.baggage('<key>')}")
    machine_load("before (nothing of ours running)")
    with tempfile.TemporaryDirectory(prefix="sandboxd-router-bench-") as tmp:
        work_dir = Path(tmp)
        os.chmod(work_dir, 0o755)  # nginx workers run as nobody when we are root
        (work_dir / "logs").mkdir()
        procs = Processes(work_dir / "logs")
        bench = Bench(config, tools=tools, work_dir=work_dir, procs=procs)
        try:
            bars = run(bench)
            machine_load("after (ours idle)")
        except (HarnessError, OSError) as e:  # OSError: a client timed out or was refused
            print(f"\nrouter benchmark: harness failed: {e!r}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted: stopping every server", file=sys.stderr)
            return 130
        finally:
            procs.stop_all()
    report(bars, bench.problems, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
