"""Closed-loop throughput (bars 1 and 2) and route-table size (bar 4), with wrk."""

from __future__ import annotations

from benchmarks import _routes
from benchmarks._bench import Bar, Bench, curl
from benchmarks._stats import krps, median


def throughput(bench: Bench) -> list[Bar]:
    """Every path at every concurrency, interleaved: rep → c → router, nginx, direct."""
    cfg = bench.config
    for target in bench.targets:  # warm-up, not counted
        bench.wrk(target.echo, 32, 1)
    runs: dict[tuple[str, int], list[float]] = {}
    errors: dict[str, int] = {t.name: 0 for t in bench.targets}
    for _ in range(cfg.reps):
        for c in cfg.concurrency:
            for target in bench.targets:
                result = bench.wrk(target.echo, c, cfg.duration)
                runs.setdefault((target.name, c), []).append(result.rps)
                errors[target.name] += result.errors
    print(
        f"\nThroughput, req/s (wrk -t1, {cfg.duration:g} s runs, median of {cfg.reps}, each "
        "run in brackets; errors = non-2xx responses + socket errors over all runs)"
    )
    print("  path  " + "".join(f"{'c=' + str(c):>26}" for c in cfg.concurrency) + "   errors")
    for target in bench.targets:
        cells = ""
        for c in cfg.concurrency:
            values = runs[(target.name, c)]
            cell = f"{krps(median(values))} ({'/'.join(f'{v / 1000:.1f}' for v in values)})"
            cells += f"{cell:>26}"
        print(f"  {target.name:6}{cells}   {errors[target.name]}")
    if not cfg.router:
        return []
    rps = {k: median(v) for k, v in runs.items()}
    ratio = rps[("router", 32)] / rps[("nginx", 32)]
    scale = rps[("router", 128)] / rps[("router", 8)]
    return [
        Bar(
            "router ÷ nginx throughput (c=32, 1 KiB, 1,000 sandboxes)",
            f"{ratio:.2f} ({krps(rps[('router', 32)])} ÷ {krps(rps[('nginx', 32)])} req/s)",
            "≥ 0.30 (aim 0.5)",
            ratio >= 0.30,
        ),
        Bar(
            "router throughput c=128 ÷ c=8, zero errors",
            f"{scale:.2f} ({krps(rps[('router', 128)])} ÷ {krps(rps[('router', 8)])} req/s), "
            f"{errors['router']} errors",
            "≥ 0.70, 0 errors",
            scale >= 0.7 and errors["router"] == 0,
        ),
    ]


def table_size(bench: Bench) -> list[Bar]:
    """Two more routers, 10 and 100,000 sandboxes, loaded in turn at c=32 (same key)."""
    cfg = bench.config
    sizes = {"10": 10, "100,000": 100_000}
    routers = [
        _routes.start_static(
            bench.procs,
            f"router-{n}",
            work_dir=bench.work_dir,
            services=[bench.echo],
            n=n,
            faults=cfg.faults,
        )
        for n in sizes.values()
    ]
    baggage = _routes.baggage(_routes.key_of(5))
    try:
        ports = {label: r.ports["echo"] for label, r in zip(sizes, routers, strict=True)}
        for label, port in ports.items():
            route = curl(port, baggage).get("sandboxd-route")
            if route != "sandbox=pr-5":
                bench.problems.append(f"router-{label}: sandbox 5's key → {route}")
            if cfg.faults:
                bench.check_decoys(f"router-{label}", port, baggage)
            bench.wrk(port, 32, 1, baggage=baggage)
        runs: dict[str, list[float]] = {label: [] for label in sizes}
        for _ in range(cfg.reps):
            for label, port in ports.items():
                runs[label].append(bench.wrk(port, 32, cfg.duration, baggage=baggage).rps)
    finally:
        for router in routers:
            bench.procs.stop(router.name)
    rps = {label: median(v) for label, v in runs.items()}
    ratio = rps["100,000"] / rps["10"]
    print("\nRoute-table size: router at c=32, the key of sandbox 5 (in both tables)")
    for label, values in runs.items():
        each = ", ".join(krps(v) for v in values)
        print(f"  {label:>7} sandboxes: {krps(rps[label])} req/s (runs: {each})")
    return [
        Bar(
            "throughput with 100,000 routes ÷ with 10 (c=32)",
            f"{ratio:.3f} ({krps(rps['100,000'])} ÷ {krps(rps['10'])} req/s)",
            "≥ 0.95",
            ratio >= 0.95,
        )
    ]
