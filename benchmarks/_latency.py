"""Added latency per hop at c=1, open loop (bar 3), and SSE per-event added delay (bar 5)."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks import _loadgen
from benchmarks._bench import BAGGAGE, Bar, Bench
from benchmarks._procs import free_port
from benchmarks._stats import median, ms, percentile


def latency(bench: Bench) -> list[Bar]:
    cfg = bench.config
    _loadgen.lower_timer_slack()
    echoes = _start_echoes(bench)  # the host's own cost of crossing cores, in the same rounds
    trips: dict[int, list[float]] = {cpu: [] for cpu in echoes}
    runs: dict[str, list[_loadgen.LatencyRun]] = {t.name: [] for t in bench.targets}
    for _ in range(cfg.latency_reps):
        for target in bench.targets:
            run = _loadgen.open_loop(
                target.echo, baggage=BAGGAGE, rate=cfg.rate, duration=cfg.latency_seconds
            )
            runs[target.name].append(_loadgen.run_async(run))
        for cpu, port in echoes.items():
            rtts = _loadgen.ping_pong(port, rate=cfg.rate, duration=cfg.latency_seconds / 2)
            trips[cpu].append(percentile(rtts, 0.5))
    for cpu in echoes:
        bench.procs.stop(f"echo-core{cpu}")
    print(
        f"\nLatency at c=1: open loop, {cfg.rate:g} req/s for {cfg.latency_seconds:g} s, "
        "counted from each request's scheduled send time; p50 = median over the runs' p50s, "
        "p99 pooled"
    )
    p50: dict[str, float] = {}
    for target in bench.targets:
        values = runs[target.name]
        per_run = [percentile(r.latencies_ns, 0.5) for r in values]
        p50[target.name] = median(per_run)
        pooled = [x for r in values for x in r.latencies_ns]
        lag = percentile([x for r in values for x in r.send_lag_ns if x > 0], 0.5)
        errors = sum(r.errors for r in values)
        slow = sum(1 for x in pooled if x > 1_000_000)
        print(
            f"  {target.name:6} p50 {ms(p50[target.name])}  p99 {ms(percentile(pooled, 0.99))}"
            f"  max {ms(max(pooled))}  (runs {', '.join(ms(v) for v in per_run)}; "
            f"{len(pooled)} requests, {slow} over 1 ms, {errors} non-200; "
            f"the generator's own send lag p50 {ms(lag)})"
        )
    added = {t.name: p50[t.name] - p50["direct"] for t in bench.targets if t.proxy}
    print(
        "  added per hop (p50 through it - p50 direct): "
        + ", ".join(f"{name} {ms(v)}" for name, v in added.items())
    )
    paired = {  # the same figure from each interleaved round's own pair, for comparison
        t.name: median(
            [
                percentile(mine.latencies_ns, 0.5) - percentile(direct.latencies_ns, 0.5)
                for mine, direct in zip(runs[t.name], runs["direct"], strict=True)
            ]
        )
        for t in bench.targets
        if t.proxy
    }
    print(
        "  (median of each round's own difference: "
        + ", ".join(f"{name} {ms(v)}" for name, v in paired.items())
        + ")"
    )
    cross, same = median(trips[0]), median(trips[1])
    wake = max(cross - same, 1_000)  # (at least 1 µs: a ratio, not a division by zero)
    print(
        f"  the host's cost of crossing cores: a 1-byte round trip at the same rate, p50 "
        f"{ms(cross)} to core 0 vs {ms(same)} on core 1 = {ms(wake)} per round trip "
        "(two wake-ups). A hop via core 0 adds "
        + ", ".join(f"{name} {v / wake:.2f}" for name, v in added.items())
        + " of these"
    )
    if not cfg.router:
        return []
    return [
        Bar(
            "added latency per hop, c=1, p50",
            f"{ms(added['router'])} (router {ms(p50['router'])} - direct "
            f"{ms(p50['direct'])}; nginx adds {ms(added['nginx'])})",
            "≤ 0.150 ms",
            added["router"] <= 150_000,
        )
    ]


def _start_echoes(bench: Bench) -> dict[int, int]:
    """A byte echo on each core: cpu → port."""
    script = str(Path(__file__).with_name("_echo.py"))
    echoes = {}
    for cpu in (0, 1):
        port = free_port()
        bench.procs.start(f"echo-core{cpu}", [sys.executable, script, str(port)], cpu=cpu)
        bench.procs.wait_accepting(f"echo-core{cpu}", port)
        echoes[cpu] = port
    return echoes


def sse(bench: Bench) -> list[Bar]:
    cfg = bench.config
    runs: dict[str, list[_loadgen.SseRun]] = {t.name: [] for t in bench.targets}
    for _ in range(cfg.reps):
        for target in bench.targets:
            stream = _loadgen.sse(
                target.sse, baggage=BAGGAGE, n=cfg.sse_events, interval_ms=cfg.sse_interval_ms
            )
            runs[target.name].append(_loadgen.run_async(stream))
    print(
        f"\nSSE: {cfg.reps} streams per path of {cfg.sse_events} events "
        f"{cfg.sse_interval_ms:g} ms apart (chunked); delay = arrival - the origin's send "
        "time, pooled; a read holding >1 event means events were batched"
    )
    p99: dict[str, float] = {}
    batched: dict[str, int] = {}
    complete: dict[str, bool] = {}
    for target in bench.targets:
        delays = [d for r in runs[target.name] for d in r.delays_ns]
        reads = [n for r in runs[target.name] for n in r.events_per_read]
        routes = ", ".join(sorted({r.route or "-" for r in runs[target.name]}))
        statuses = ", ".join(sorted({str(r.status) for r in runs[target.name]}))
        p99[target.name] = percentile(delays, 0.99)
        batched[target.name] = sum(1 for n in reads if n > 1)
        complete[target.name] = len(delays) == cfg.sse_events * cfg.reps
        print(
            f"  {target.name:6} p50 {ms(percentile(delays, 0.5))}  p99 {ms(p99[target.name])}"
            f"  max {ms(max(delays, default=0))}  {len(delays)} events in {len(reads)} reads, "
            f"{batched[target.name]} batched; status {statuses}, sandboxd-route {routes}"
        )
    if not cfg.router:
        return []
    added = p99["router"] - p99["direct"]
    ok = added <= 1_000_000 and batched["router"] == 0 and complete["router"]
    return [
        Bar(
            "SSE per-event added delay p99, nothing buffered",
            f"{ms(added)} (router p99 {ms(p99['router'])} - direct {ms(p99['direct'])}; "
            f"{batched['router']} batched reads; nginx adds {ms(p99['nginx'] - p99['direct'])})",
            "≤ 1 ms, 0 batched",
            ok,
        )
    ]
