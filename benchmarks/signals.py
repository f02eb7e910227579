"""Signals benchmark: what recording costs the router (issue 13's performance bars).

Run:  .venv/bin/python benchmarks/signals.py [--quick] [--reps 5] [--duration 3]
      [--no-metrics-api] [--memory-only]

Method (shared/reference/performance.md, as benchmarks/router.py): proxies pinned to core 0
(a router's telemetry process is its child and inherits that pinning); wrk, the origin (nginx,
1 worker, `return 200` with 1 KiB), the control plane and the OTLP receiver on core 1; c=32,
HTTP/1.1 keep-alive; every request carries `baggage: userid=alice,sandbox=<key>,tenant=acme`
with a live sandbox's key and a `traceparent`. A real control plane (`sandboxd serve`, as
`_propagation.py` starts it) holds 1,000 fork-less sandboxes; a fork-less sandbox's key is
routed to the baseline yet recorded as that sandbox's traffic (aggregates, request records,
spans), so recording costs what it costs for a forked one. Side by side, all running at once:

- `router-on`: the DEFAULT configuration — recording on, access log to a file, following the
  control plane (the signals sink aggregates and posts to it), no OTEL_* variable;
- `router-off`: the same with `--record off` (no ring, no telemetry process, no access log);
- `router-otlp`: as `router-on` with `OTEL_EXPORTER_OTLP_ENDPOINT` at a live receiver
  (`_otlp_sink.py`: answers 200, counts spans); every request of a sandbox becomes a span;
- `router-otlp-down`: the same with the endpoint down (nothing listens there);
- `nginx-log` / `nginx`: the routing peer with and without a JSON access log (`escape=json`).

Interleaved repetitions (the order reversed every other one), medians. Beside every router
figure: its telemetry process's CPU (share of a core during the runs, and CPU per request
including its catch-up after each run) and the records it lost (logged by it on stderr): a
bar passed by losing records is not passed (nor one with a live endpoint that did not receive
every span). Then router RSS with 1,000 sandboxes x 3 services' aggregates and 1,000 open
connections: the pages the router and its telemetry process hold, each counted once (as a
container running both is charged; read from pagemap, so as root; VmRSS summed otherwise, and
VmRSS and Pss printed beside), with
`router-off` holding the same connections for reference, and `benchmarks/metrics_api.py`'s
`GET /v1/sandboxes/{name}/metrics` p99 under traffic (its own run, printed as it runs).

Prints PASS/FAIL lines with the configuration beside every figure; exits 0 whatever the bars
say (1 when the harness failed, 2 when it could not start).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _loadgen, _recording, _routes, _wrk  # noqa: E402
from benchmarks._bench import Bar  # noqa: E402
from benchmarks._procs import (  # noqa: E402
    HarnessError,
    Processes,
    ensure_tools,
    free_port,
    interrupt_on_signals,
    machine_load,
    prepare_self,
)
from benchmarks._propagation import POPULATION, populate  # noqa: E402
from benchmarks._recording import Proxy, Runs  # noqa: E402
from benchmarks._stats import krps, median, median_interval  # noqa: E402
from tests.support.server import Sandboxd, running_sandboxd  # noqa: E402

T = TypeVar("T")
C = 32
HELD = 1000  # idle keep-alive connections for the RSS bar
EXTRA_SERVICES = ("echo-2", "echo-3")  # the RSS bar's aggregates: 1,000 sandboxes x 3 services
BARS = (  # title, proxy, ÷ proxy, floor
    ("recording on (default) ÷ nginx with a JSON access log", "router-on", "nginx-log", 0.5),
    ("recording on (default) ÷ the router with --record off", "router-on", "router-off", 0.9),
    ("OTLP endpoint live, every sandbox request a span, ÷ --record off", "router-otlp",
     "router-off", 0.85),
    ("OTLP endpoint down ÷ --record off", "router-otlp-down", "router-off", 0.85),
)  # fmt: skip


@dataclass(frozen=True)
class Settings:
    reps: int = 5
    duration: float = 3
    metrics_api: bool = True
    quick: bool = False
    memory_only: bool = False


@dataclass
class World:
    procs: Processes
    work_dir: Path
    tools: dict[str, str]
    server: Sandboxd
    live: dict[str, str]  # sandbox → routing key
    proxies: dict[str, Proxy]
    otlp_port: int

    @property
    def control_plane(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid


def settings(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions of 2 s")
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default 5)")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 3)")
    parser.add_argument("--no-metrics-api", action="store_true", help="skip metrics_api.py")
    parser.add_argument(
        "--memory-only", action="store_true", help="only the memory bar (no throughput runs)"
    )
    args = parser.parse_args(argv)
    base = Settings(reps=2, duration=2, quick=True) if args.quick else Settings()
    return Settings(
        reps=args.reps or base.reps,
        duration=args.duration or base.duration,
        metrics_api=not (args.no_metrics_api or args.memory_only),
        quick=base.quick,
        memory_only=args.memory_only,
    )


def start(
    procs: Processes,
    work_dir: Path,
    tools: dict[str, str],
    *,
    server: Sandboxd,
    origin: _routes.Service,
    port: int,
) -> World:
    """The 1,000 sandboxes, the OTLP receiver, the routers (listening on `port`, the
    catalog's for echo) and the nginx peers."""
    live = populate(server, faults=0)
    token = (server.data_dir / "router-token").read_text().strip()
    otlp_port = _recording.start_otlp_receiver(procs)
    common = {"server": server, "token": token, "port": port, "sandboxes": len(live)}
    logs = work_dir / "access"
    logs.mkdir()
    routers = [
        ("router-off", "127.0.0.2", {"record": False}, "recording off (--record off)"),
        ("router-on", "127.0.0.1", {"record": True, "access_log": logs / "on.log"},
         "recording on (default: access log to a file, signals to the control plane, no OTLP)"),
        ("router-otlp", "127.0.0.3",
         {"record": True, "access_log": logs / "otlp.log", "otlp": f"http://127.0.0.1:{otlp_port}"},
         "recording on + OTLP endpoint live, every sandbox request a span"),
        ("router-otlp-down", "127.0.0.4",
         {"record": True, "access_log": logs / "down.log", "otlp": f"http://127.0.0.1:{free_port()}"},
         "recording on + OTLP endpoint down (nothing listening)"),
    ]  # fmt: skip
    proxies = {}
    for name, host, options, description in routers:
        proxy = _recording.start_router(procs, name, host=host, **common, **options)  # type: ignore[arg-type]
        proxies[name] = Proxy(name, proxy.host, proxy.port, description=description)
    keys = {key: name for name, key in live.items()}
    for name, log, description in (
        ("nginx", None, "nginx, no access log"),
        ("nginx-log", logs / "nginx.log", "nginx, JSON access log to a file"),
    ):
        proxy = _recording.start_nginx(
            procs, name, nginx=tools["nginx"], work_dir=work_dir, origin=origin, keys=keys,
            access_log=log,
        )  # fmt: skip
        proxies[name] = Proxy(name, proxy.host, proxy.port, router=False, description=description)
    return World(procs, work_dir, tools, server, live, proxies, otlp_port)


def key_of(world: World) -> tuple[str, str]:
    name = f"live-{POPULATION // 2}"
    return name, world.live[name]


def check_routing(world: World) -> None:
    """Each proxy answers 200 to the benchmark's request (the sandbox's key)."""
    _, key = key_of(world)
    print("\nRouting check (one request with the sandbox's key each)")
    for proxy in world.proxies.values():
        request = urllib.request.Request(proxy.url, headers={"baggage": _routes.baggage(key)})
        with urllib.request.urlopen(request, timeout=5) as answer:
            route = answer.headers.get("sandboxd-route")
            print(f"  {proxy.name:17} → {answer.status}, sandboxd-route: {route}")
            if answer.status != 200:
                raise HarnessError(f"{proxy.name} answered {answer.status}")


def one_run(world: World, proxy: Proxy, runs: Runs, duration: float, script: Path) -> None:
    _, key = key_of(world)
    pid = world.procs.pid(proxy.name) if proxy.router else 0
    before = _recording.usage(pid) if pid else None
    cp_before, cores_before = _recording.cpu_ticks(world.control_plane), _recording.core_ticks()
    started = time.monotonic()
    result, _ = _wrk.run(
        world.tools["wrk"], proxy.url, connections=C, duration=duration,
        baggage=_routes.baggage(key), script=script,
    )  # fmt: skip
    wall = time.monotonic() - started
    cores = _recording.busy(cores_before, _recording.core_ticks())
    runs.cores.append((cores[0], cores[1]))
    cp = _recording.cpu_ticks(world.control_plane) - cp_before
    runs.control_plane_share.append(cp / _recording.TICKS / wall)
    runs.rps.append(result.rps)
    runs.requests += result.requests
    runs.errors += result.errors
    if before is None:
        return
    during = _recording.usage(pid)
    _recording.settle(pid)
    after = _recording.usage(pid)
    runs.router_share.append((during.router - before.router) / _recording.TICKS / wall)
    if after.telemetry_pid is not None and after.telemetry_pid == before.telemetry_pid:
        runs.telemetry_share.append((during.telemetry - before.telemetry) / _recording.TICKS / wall)
        runs.telemetry_seconds += (after.telemetry - before.telemetry) / _recording.TICKS


def throughput(world: World, cfg: Settings) -> dict[str, Runs]:
    script = _recording.write_traceparent_script(world.work_dir)
    order = list(world.proxies.values())
    _, key = key_of(world)
    for proxy in order:  # warm-up, not counted
        _wrk.run(world.tools["wrk"], proxy.url, connections=C, duration=1,
                 baggage=_routes.baggage(key), script=script)  # fmt: skip
        if proxy.router:
            _recording.settle(world.procs.pid(proxy.name))
    lost_before = {p.name: _recording.records_lost(world.procs, p.name) for p in order}
    spans_before = otlp_spans(world.otlp_port)
    all_runs = {p.name: Runs() for p in order}
    for rep in range(cfg.reps):
        for proxy in order if rep % 2 == 0 else reversed(order):
            one_run(world, proxy, all_runs[proxy.name], cfg.duration, script)
    time.sleep(2.5)  # the telemetry processes' last tick (lost records), the exporter's batch
    for proxy in order:
        if proxy.router:
            lost = _recording.records_lost(world.procs, proxy.name)
            all_runs[proxy.name].lost = lost - lost_before[proxy.name]
    all_runs["router-otlp"].spans = otlp_spans(world.otlp_port) - spans_before
    print_throughput(world, cfg, all_runs)
    return all_runs


def otlp_spans(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5) as answer:
        return int(json.loads(answer.read())["spans"])


def cost(runs: Runs) -> str:
    """The telemetry process's figures, printed beside every ratio."""
    if not runs.telemetry_share:
        return "no telemetry process"
    per_request = runs.telemetry_seconds / max(1, runs.requests) * 1e6
    return (
        f"telemetry {median(runs.telemetry_share):.0%} of a core, {per_request:.1f} µs/request, "
        f"{runs.lost} records lost"
    )


def print_throughput(world: World, cfg: Settings, runs: dict[str, Runs]) -> None:
    print(
        f"\nThroughput at c={C}, req/s (wrk -t1, {cfg.duration:g} s runs, median of {cfg.reps}, "
        "each run in brackets); router CPU = the router's main process, share of a core"
    )
    for name, r in runs.items():
        each = "/".join(f"{v / 1000:.1f}" for v in r.rps)
        router = f"router {median(r.router_share):.0%}; " if r.router_share else ""
        rate = f"{krps(median(r.rps)):>7} ({each}), {r.errors} errors"
        print(f"  {name:17} {rate}; {router}{cost(r)}")
        core0, core1 = (median([c[i] for c in r.cores]) for i in (0, 1))
        print(
            f"  {'':17} cores busy {core0:.0%} / {core1:.0%}, of which the control plane "
            f"{median(r.control_plane_share):.0%} (core 1); {world.proxies[name].description}"
        )
    otlp = runs["router-otlp"]
    print(f"  OTLP receiver: {otlp.spans} spans received for {otlp.requests} sandbox requests")


def ratio(runs: dict[str, Runs], a: str, b: str) -> tuple[float, str]:
    """median(a) ÷ median(b) (the bar's figure), the ratios of each repetition (a's run ÷ the
    b run beside it), and their median with its 95 % bootstrap interval: how far this run's
    noise leaves the figure from the line."""
    value = median(runs[a].rps) / median(runs[b].rps)
    each = [x / y for x, y in zip(runs[a].rps, runs[b].rps, strict=True)]
    pairs = "/".join(f"{r:.2f}" for r in each)
    low, high = median_interval(each)
    rates = f"{krps(median(runs[a].rps))} ÷ {krps(median(runs[b].rps))} req/s"
    spread = f"their median {median(each):.3f}, 95 % interval {low:.2f} to {high:.2f}"
    return value, f"{value:.3f} ({rates}; each repetition {pairs}; {spread})"


def throughput_bars(runs: dict[str, Runs]) -> list[Bar]:
    peer, peer_text = ratio(runs, "nginx-log", "nginx")
    print(f"  peer: nginx JSON access log on ÷ off = {peer_text}")
    bars = []
    for title, a, b, floor in BARS:
        value, text = ratio(runs, a, b)
        mine = runs[a]
        extra = f"; nginx's own log on ÷ off {peer:.2f}" if b == "nginx-log" else ""
        bar, traced = f"≥ {floor}, 0 records lost", True
        if mine.spans is not None:  # every request a span: the receiver got them all (its
            # count may hold a few of the warm-up's, exported late: 1 % is allowed for that)
            traced = mine.spans >= 0.99 * mine.requests
            extra += f"; {mine.spans} spans received of {mine.requests} requests"
            bar += ", every span received"
        ok = value >= floor and mine.lost == 0 and mine.errors == 0 and traced
        title = f"{title} (c={C}, 1 KiB, 1,000 live sandboxes)"
        bars.append(Bar(title, f"{text}; {cost(mine)}{extra}", bar, ok))
    return bars


def memory(world: World, ports: list[int]) -> list[Bar]:
    """router-on after traffic with all 1,000 keys on each of the 3 services, then 1,000 idle
    connections held."""
    proxy = world.proxies["router-on"]
    script = _recording.write_many_keys_script(world.work_dir, list(world.live.values()))
    _, key = key_of(world)
    requests = 0
    for port in ports:
        result, _ = _wrk.run(world.tools["wrk"], f"http://{proxy.host}:{port}/", connections=C,
                             duration=3, baggage=_routes.baggage(key), script=script)  # fmt: skip
        requests += result.requests
    pid = world.procs.pid(proxy.name)
    _recording.settle(pid)

    async def measure() -> tuple[list[dict[str, int]], int | None]:
        pids = [p for p in (pid, _recording.usage(pid).telemetry_pid) if p]
        return [_recording.memory_kib(p) for p in pids], _recording.resident_kib(pids)

    (both, together), failed = held(proxy, key, measure)
    router, telemetry = both[0], both[1] if len(both) > 1 else {"VmRSS": 0, "Pss": 0}
    total = router["VmRSS"] + telemetry["VmRSS"]
    pss = router["Pss"] + telemetry["Pss"]
    judged = together if together is not None else total
    print(
        f"\nMemory (router-on, default configuration): after {requests} requests spread "
        f"over {len(world.live)} sandboxes' keys x {len(ports)} services, with {HELD} "
        "keep-alive connections open:"
    )
    for name, m in (("router", router), ("telemetry process", telemetry)):
        print(
            f"  {name:18} VmRSS {mb(m['VmRSS'])}, of which shared memory (the record ring) "
            f"{mb(m.get('RssShmem', 0))}; Pss {mb(m['Pss'])}; Private_Dirty "
            f"{mb(m.get('Private_Dirty', 0))}"
        )
    off_pid = world.procs.pid("router-off")

    async def off() -> dict[str, int]:
        return _recording.memory_kib(off_pid)

    reference, _ = held(world.proxies["router-off"], key, off)
    print(f"  (router-off, the same {HELD} connections: VmRSS {mb(reference['VmRSS'])})")
    how = "each page once (pagemap)" if together is not None else "VmRSS summed (not root)"
    return [
        Bar(
            f"router RSS (router + telemetry process), {len(world.live)} sandboxes x "
            f"{len(ports)} services' aggregates, {HELD} open connections",
            f"{mb(judged)} resident together, {how}; VmRSS {mb(total)} (router "
            f"{mb(router['VmRSS'])} + telemetry {mb(telemetry['VmRSS'])}: shared pages counted "
            f"in both); Pss {mb(pss)}; {failed} of {HELD} requests failed",
            "≤ 64 MB",
            judged <= 64 * 1024 and failed == 0,
        )
    ]


def held(proxy: Proxy, key: str, measure: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """`measure()` while HELD keep-alive connections are open on `proxy`, and the requests
    that failed."""
    baggage = _routes.baggage(key)
    return _loadgen.run_async(
        _loadgen.holding(proxy.port, count=HELD, baggage=baggage, measure=measure, host=proxy.host)
    )


def mb(kib: int) -> str:
    return f"{kib / 1024:.1f} MB"


def metrics_api(cfg: Settings) -> list[Bar]:
    """benchmarks/metrics_api.py in its own run (its own control plane), output printed; on
    every core, as when run alone (the proxies are stopped by then; this process is on core 1)."""
    argv = [sys.executable, str(Path(__file__).with_name("metrics_api.py"))]
    if cfg.quick:
        argv += ["--requests", "150", "--rates", "3000"]
    print(f"\n$ {' '.join(argv[1:])}", flush=True)
    cores = ["taskset", "-c", f"0-{(os.cpu_count() or 1) - 1}"]
    done = subprocess.run([*cores, *argv], capture_output=True, text=True, timeout=1200)
    print(done.stdout + done.stderr, end="")
    p99s, traffic = [], False
    for line in done.stdout.splitlines():
        traffic = traffic or line.startswith("under traffic")
        found = re.search(r"metrics\s+p50\s+[\d.]+ ms\s+p99\s+([\d.]+) ms", line)
        if traffic and found:
            p99s.append(float(found.group(1)))
    if done.returncode != 0 or not p99s:
        raise HarnessError(f"metrics_api.py failed ({done.returncode})")
    return [
        Bar(
            "GET /v1/sandboxes/{name}/metrics p99, 1,000 live sandboxes under traffic",
            f"{max(p99s):.1f} ms (worst of {len(p99s)} traffic rates; SQLite; metrics_api.py)",
            "≤ 50 ms",
            max(p99s) <= 50,
        )
    ]


def run(procs: Processes, work_dir: Path, tools: dict[str, str], cfg: Settings) -> list[Bar]:
    origin = _recording.start_origin(procs, nginx=tools["nginx"], work_dir=work_dir)
    port = free_port()
    ports = [port, *(free_port() for _ in EXTRA_SERVICES)]
    catalog = work_dir / "sandboxd.yaml"
    catalog.write_text(
        "services:\n"
        + "".join(
            f"  - name: {name}\n    routerPort: {p}\n"
            f"    baseline: {{url: 'http://127.0.0.1:{origin.baseline_port}', health: /}}\n"
            for name, p in zip(("echo", *EXTRA_SERVICES), ports, strict=True)
        )
    )
    # (the control plane inherits this process's pinning: core 1)
    with running_sandboxd(work_dir / "control-plane", catalog=catalog) as server:
        world = start(procs, work_dir, tools, server=server, origin=origin, port=port)
        check_routing(world)
        bars = [] if cfg.memory_only else throughput_bars(throughput(world, cfg))
        bars += memory(world, ports)
        procs.stop_all()
    if cfg.metrics_api:
        bars += metrics_api(cfg)
    return bars


def report(bars: list[Bar], cfg: Settings) -> None:
    print(f"\nIssue 13 performance bars ({cfg.reps} interleaved repetitions of {cfg.duration:g} s)")
    for i, bar in enumerate(bars, 1):
        print(f"  {i}. {bar.title}: {bar.measured}; bar {bar.bar}: {'PASS' if bar.ok else 'FAIL'}")


def main(argv: list[str] | None = None) -> int:
    cfg = settings(argv)
    interrupt_on_signals()
    try:
        prepare_self()
        tools = ensure_tools()
    except (HarnessError, subprocess.CalledProcessError) as e:
        print(f"signals benchmark: {e}", file=sys.stderr)
        return 2
    print(f"signals benchmark: {cfg}")
    machine_load("before (nothing of ours running)")
    with tempfile.TemporaryDirectory(prefix="sandboxd-signals-bench-") as tmp:
        work_dir = Path(tmp)
        os.chmod(work_dir, 0o755)  # nginx workers run as nobody when we are root
        (work_dir / "logs").mkdir()
        procs = Processes(work_dir / "logs")
        try:
            bars = run(procs, work_dir, tools, cfg)
        except (HarnessError, OSError) as e:
            print(f"\nsignals benchmark: harness failed: {e!r}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted: stopping every server", file=sys.stderr)
            return 130
        finally:
            procs.stop_all()
    report(bars, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
