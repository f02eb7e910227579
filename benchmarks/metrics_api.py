"""Signals benchmark: `GET /v1/sandboxes/{name}/metrics` with 1,000 live sandboxes under traffic,
and what a post of 1,000 buckets to `/v1/router-signals` costs.

Run:  .venv/bin/python benchmarks/metrics_api.py [--sandboxes 1000] [--requests 600]
      [--postgres | --database-url URL]

A real control plane (`sandboxd serve`, SQLite by default) is seeded through its API with
N sandboxes x 3 services x 30 buckets of 10 s (the default 5 min window; `--samples` latency
samples each) and the baseline's buckets of the same services from two router instances with
full reservoirs (512 samples). Then, in interleaved rounds, GET metrics of random sandboxes is
timed beside GET /healthz on the same server (the floor), first quiet, then while another
process posts the current buckets of every sandbox (1,000 a post, as routers re-send open buckets).
Before that, the control plane's CPU (user + system, every thread) per 1,000 buckets and per
1,000 request records ingested (posts of 1,000, records shaped as the router makes them).
DESIGN §9 / issue 13 bar: GET metrics p99 ≤ 50 ms with 1,000 live sandboxes under traffic.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandboxd_router.telemetry.signals import MAX_POST_BYTES  # noqa: E402
from tests.support.server import Sandboxd, free_port, running_sandboxd  # noqa: E402

SERVICES = ("cluster-mcp", "logs-mcp", "agent")
BUCKETS = 30
PER_POST = 1000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bucket(box: dict[str, Any] | None, service: str, start: int, samples: int,
           rng: random.Random, *, scale: float = 1.0) -> dict[str, Any]:  # fmt: skip
    latencies = [round(rng.lognormvariate(0, 0.4) * scale, 3) for _ in range(samples)]
    return {
        "sandbox": box["name"] if box else "", "routingKey": box["routingKey"] if box else "",
        "service": service, "start": start, "width": 10, "requests": samples * 2,
        "errors": {"http_5xx": samples // 50}, "latencyMs": latencies,
        "histogram": [0] * 17, "tools": {"describe_pod": {"calls": samples}},
    }  # fmt: skip


def as_routers_post(buckets: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """`buckets` in posts as a router's telemetry process makes them: at most `PER_POST`, and
    at most its `MAX_POST_BYTES` of JSON (`sandboxd_router.telemetry.signals`)."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for b in buckets:
        n = len(orjson.dumps(b)) + 1
        if chunk and (size + n > MAX_POST_BYTES - 64 or len(chunk) >= PER_POST):
            yield chunk
            chunk, size = [], 0
        chunk.append(b)
        size += n
    if chunk:
        yield chunk


def timed_posts(router: httpx.Client, instance: str, buckets: list[dict[str, Any]]) -> list[float]:
    times = []
    for i in range(0, len(buckets), PER_POST):
        started = time.perf_counter()
        body = {"instance": instance, "buckets": buckets[i : i + PER_POST]}
        answer = router.post("/v1/router-signals", json=body)
        answer.raise_for_status()
        times.append(time.perf_counter() - started)
    return times


def seed(router: httpx.Client, boxes: list[dict[str, Any]], samples: int) -> list[float]:
    rng, now = random.Random(13), int(time.time()) // 10 * 10
    starts = [now - 10 * n for n in range(BUCKETS)]
    mine = [bucket(b, s, t, samples, rng) for b in boxes for s in SERVICES for t in starts]
    base = [bucket(None, s, t, 512, rng) for s in SERVICES for t in starts]
    times = timed_posts(router, "bench-sandboxes", mine)
    for instance in ("bench-base-a", "bench-base-b"):
        timed_posts(router, instance, base)
    return times


@contextlib.contextmanager
def traffic(
    server: Sandboxd, token: str, boxes: list[dict[str, Any]], samples: int, rate: float
) -> Iterator[list[float]]:
    """Another process re-sending every sandbox's current buckets (and the baseline's), 1,000
    a post, `rate` buckets a second (0: back to back); the post times once it stops. A
    process, not a thread: making buckets and encoding a post hold this process's GIL for
    milliseconds, which the timed GETs would count as the server's."""
    spawn = multiprocessing.get_context("spawn")
    ready, stop, results = spawn.Event(), spawn.Event(), spawn.Queue()
    args = (server.url, token, boxes, samples, rate, ready, stop, results)
    poster = spawn.Process(target=post_until_stopped, args=args, daemon=True)
    poster.start()
    ready.wait(60)
    times: list[float] = []
    try:
        yield times
    finally:
        stop.set()
        times.extend(results.get(timeout=60))
        poster.join(30)


def post_until_stopped(
    url: str,
    token: str,
    boxes: list[dict[str, Any]],
    samples: int,
    rate: float,
    ready: Any,
    stop: Any,
    results: Any,
) -> None:
    rng, grow, times = random.Random(7), 1, []
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as router:
        ready.set()
        started, sent = time.perf_counter(), 0
        while not stop.is_set():
            now = int(time.time()) // 10 * 10
            current = [bucket(b, s, now, samples + grow, rng) for b in boxes for s in SERVICES]
            current += [bucket(None, s, now, min(512, 50 + grow), rng) for s in SERVICES]
            for i, chunk in enumerate(as_routers_post(current)):
                if stop.is_set():
                    break
                if rate:
                    stop.wait(max(0.0, started + sent / rate - time.perf_counter()))
                times.extend(timed_posts(router, f"bench-live-{i}", chunk))
                sent += len(chunk)
            grow += 1
    results.put(times)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` so far (every thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request_record(box: dict[str, Any], seq: int, rng: random.Random) -> dict[str, Any]:
    """A record as a router's telemetry process sends it (`request_wire`): an MCP call."""
    rpc = str(seq)
    attributes = {
        "http.request.method": "POST", "url.path": "/mcp", "url.scheme": "http",
        "network.protocol.version": "1.1", "http.response.status_code": 200,
        "sandboxd.sandbox": box["name"], "sandboxd.route": "sandbox", "mcp.method.name":
        "tools/call", "gen_ai.tool.name": "describe_pod", "jsonrpc.request.id": rpc,
        "mcp.protocol.version": "2025-06-18", "rpc.response.status_code": "0",
    }  # fmt: skip
    return {
        "seq": seq, "sandbox": box["name"], "routingKey": box["routingKey"],
        "service": "cluster-mcp", "route": "sandbox", "start": time.time() - rng.random(),
        "durationMs": round(rng.lognormvariate(0, 0.4), 3), "method": "POST", "status": 200,
        "bytesIn": 180, "bytesOut": 900, "error": None, "injected": False, "faults": [],
        "traceId": f"{rng.getrandbits(128):032x}", "spanId": f"{rng.getrandbits(64):016x}",
        "parentSpanId": f"{rng.getrandbits(64):016x}", "rpcMethod": "tools/call",
        "tool": "describe_pod", "rpcId": rpc, "name": "POST", "attributes": attributes,
        "events": [],
    }  # fmt: skip


def ingest_cost(
    server: Sandboxd, router: httpx.Client, boxes: list[dict[str, Any]], samples: int
) -> tuple[float, float]:
    """The control plane's CPU seconds per 1,000 buckets and per 1,000 request records
    ingested: 10 posts of 1,000 of each (the current buckets of every sandbox, records of
    1,000 sandboxes), CPU read from /proc before and after."""
    assert server.proc is not None
    rng, posts = random.Random(5), 10
    costs = []
    for kind in ("buckets", "requests"):
        bodies = []
        for n in range(posts):
            if kind == "buckets":
                now, pairs = int(time.time()) // 10 * 10, len(boxes) * len(SERVICES)
                entries = [bucket(boxes[i % len(boxes)], SERVICES[i // len(boxes) % 3],
                                  now - 10 * (i // pairs), samples + n, rng)
                           for i in range(PER_POST)]  # fmt: skip
            else:
                entries = [request_record(boxes[i % len(boxes)], i, rng) for i in range(PER_POST)]
            bodies.append(orjson.dumps({"instance": f"bench-cost-{n}", kind: entries}))
        used = cpu_seconds(server.proc.pid)
        for body in bodies:
            answer = router.post("/v1/router-signals", content=body,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
            answer.raise_for_status()
        costs.append((cpu_seconds(server.proc.pid) - used) / posts)
    return costs[0], costs[1]


def latencies(client: httpx.Client, paths: list[str]) -> list[float]:
    out = []
    for path in paths:
        started = time.perf_counter()
        client.get(path).raise_for_status()
        out.append(time.perf_counter() - started)
    return out


def measure(client: httpx.Client, names: list[str], requests: int) -> dict[str, list[float]]:
    rounds: dict[str, list[float]] = {"metrics": [], "healthz": []}
    for _ in range(3):  # interleaved repetitions
        picks = [f"/v1/sandboxes/{random.choice(names)}/metrics" for _ in range(requests // 3)]
        rounds["metrics"] += latencies(client, picks)
        rounds["healthz"] += latencies(client, ["/healthz"] * (requests // 3))
    return rounds


def report(label: str, rounds: dict[str, list[float]]) -> None:
    floor = pct(rounds["healthz"], 0.99)
    print(label)
    for key, name in (
        ("metrics", "GET /v1/sandboxes/{name}/metrics"),
        ("healthz", "GET /healthz (floor)"),
    ):
        values = rounds[key]
        p50, p99 = statistics.median(values), pct(values, 0.99)
        print(f"  {name:36} p50 {p50 * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms  "
              f"ratio p99 ÷ floor {p99 / floor:5.2f}")  # fmt: skip


def full_post(router: httpx.Client, boxes: list[dict[str, Any]]) -> tuple[list[float], int]:
    """1,000 buckets with full reservoirs (512 + 128 samples): the largest post there is."""
    rng = random.Random(3)
    start = int(time.time()) // 10 * 10 - 600
    buckets = [bucket(boxes[i % len(boxes)], SERVICES[i % 3], start - 10 * (i // len(boxes)),
                      640, rng) for i in range(PER_POST)]  # fmt: skip
    for b in buckets:
        b["injected"], b["injectedLatencyMs"] = 128, b["latencyMs"][512:]
        b["latencyMs"] = b["latencyMs"][:512]
    size = len(
        httpx.Request("POST", "http://x", json={"instance": "f", "buckets": buckets}).content
    )
    times = []
    for n in range(5):
        times += timed_posts(router, f"bench-full-{n}", buckets)
    return times, size


DEFAULT_SWEEP = {"SANDBOXD_REAPER_INTERVAL": "10"}  # `sandboxd serve`'s default


def run(args: argparse.Namespace, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="sandboxd-bench-") as tmp:
        catalog = Path(tmp) / "sandboxd.yaml"
        catalog.write_text(
            f"services:\n  - name: echo\n    routerPort: {free_port()}\n"
            f"    baseline: {{url: 'http://127.0.0.1:{free_port()}', health: /}}\n"
        )
        data = Path(tmp) / "data"
        with (
            # the TTL sweep at its default interval (the tests' helper sweeps every second)
            running_sandboxd(
                data, catalog=catalog, database_url=database_url, env=DEFAULT_SWEEP
            ) as server,
            server.client() as client,
            server.client(token=(server.data_dir / "router-token").read_text().strip()) as router,
        ):
            local = threading.local()

            def make(i: int) -> dict[str, Any]:
                if not hasattr(local, "client"):
                    local.client = server.client()
                answer = local.client.post("/v1/sandboxes", json={"name": f"live-{i}"})
                answer.raise_for_status()
                body: dict[str, Any] = answer.json()
                return body

            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                boxes = list(pool.map(make, range(args.sandboxes)))
            backend = "PostgreSQL" if database_url else "SQLite"
            print(f"{backend}: {args.sandboxes} live sandboxes")
            started = time.perf_counter()
            posts = seed(router, boxes, args.samples)
            total = len(boxes) * len(SERVICES) * BUCKETS
            took = time.perf_counter() - started
            print(
                f"seeded {total} sandbox buckets ({args.samples} samples each) + baseline in "
                f"{took:.1f} s; a post of {PER_POST} such buckets: "
                f"p50 {statistics.median(posts) * 1000:.0f} ms, max {max(posts) * 1000:.0f} ms"
            )
            full, size = full_post(router, boxes)
            print(
                f"a post of {PER_POST} full buckets (512 + 128 samples, "
                f"{size / 2**20:.1f} MiB): p50 {statistics.median(full) * 1000:.0f} ms, "
                f"max {max(full) * 1000:.0f} ms"
            )
            per_bucket, per_record = ingest_cost(server, router, boxes, args.samples)
            print(
                f"control-plane CPU per {PER_POST} ingested: buckets ({args.samples} samples) "
                f"{per_bucket * 1000:.0f} ms, request records {per_record * 1000:.0f} ms"
            )
            names = [b["name"] for b in boxes]
            report("quiet:", measure(client, names, args.requests))
            token = (server.data_dir / "router-token").read_text().strip()
            for rate in args.rates:
                with traffic(server, token, boxes, args.samples, rate) as times:
                    rounds = measure(client, names, args.requests)
                each = statistics.median(times or [0]) * 1000
                pace = f"{rate:.0f} buckets/s" if rate else "back to back"
                report(
                    f"under traffic ({pace}; {len(times)} posts of current buckets meanwhile, "
                    f"sized as routers size them, p50 {each:.0f} ms each):",
                    rounds,
                )
            print("  bar: GET metrics p99 ≤ 50 ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sandboxes", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=50, help="latency samples per bucket")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--rates", type=float, nargs="*", default=[3000.0, 0.0],
        help="buckets/s the traffic re-sends (3,000: every sandbox's 3 services once a "
        "second; 0: back to back)",
    )  # fmt: skip
    parser.add_argument("--postgres", action="store_true", help="start a PostgreSQL server")
    args = parser.parse_args()
    if not args.postgres:
        run(args, args.database_url)
        return
    from tests.support.postgres import PostgresServer

    pg = PostgresServer()
    pg.start()
    try:
        run(args, pg.new_database())
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
