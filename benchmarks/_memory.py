"""Router memory with 10,000 routes and 1,000 open keep-alive connections (bar 7)."""

from __future__ import annotations

from benchmarks import _loadgen, _routes
from benchmarks._bench import BAGGAGE, Bar, Bench
from benchmarks._procs import rss_kib


def memory(bench: Bench) -> list[Bar]:
    n = bench.config.connections_held
    router = _routes.start_static(
        bench.procs,
        "router-10k",
        work_dir=bench.work_dir,
        services=[bench.echo],
        n=10_000,
        faults=bench.config.faults,
    )
    try:
        if bench.config.faults:
            bench.check_decoys(router.name, router.ports["echo"])
        ours = held(bench, router.name, router.ports["echo"], n)
    finally:
        bench.procs.stop(router.name)
    peer = held(bench, "nginx", bench.target("nginx").echo, n)
    print(
        f"\nMemory: VmRSS of the process tree, idle (after one request) → with {n} keep-alive "
        "connections open, each after one request"
    )
    print(
        f"  router, 10,000 sandboxes: {ours[0] / 1024:.1f} MB → {ours[1] / 1024:.1f} MB "
        f"({ours[2]} of {n} requests failed)"
    )
    print(
        f"  nginx (master + worker), 1,000 sandboxes: {peer[0] / 1024:.1f} MB → "
        f"{peer[1] / 1024:.1f} MB ({peer[2]} failed)"
    )
    return [
        Bar(
            f"router RSS, 10,000 routes, {n} open connections",
            f"{ours[1] / 1024:.1f} MB (idle {ours[0] / 1024:.1f} MB; {ours[2]} failed requests)",
            "≤ 64 MB",
            ours[1] <= 64 * 1024 and ours[2] == 0,
        )
    ]


def held(bench: Bench, name: str, port: int, n: int) -> tuple[int, int, int]:
    """(idle RSS KiB, RSS KiB with `n` connections held, failed requests)."""
    pid = bench.procs.pid(name)
    probe = _loadgen.Probe(port)
    probe.get(baggage=BAGGAGE)
    idle = rss_kib(pid)
    probe.close()

    async def measure() -> int:
        return rss_kib(pid)

    loaded, failed = _loadgen.run_async(
        _loadgen.holding(port, count=n, baggage=BAGGAGE, measure=measure)
    )
    return idle, loaded, failed
