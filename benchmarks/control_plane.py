"""Control-plane benchmark: create → Ready latency and API latency with 1,000 live sandboxes.

Run:  .venv/bin/python benchmarks/control_plane.py [--runs 20] [--sandboxes 1000]
      [--database-url URL]

Each figure is printed beside a peer measured in the same run on the same machine:
- create → Ready (local runtime, a trivial `python3 -m http.server` fork) beside the time the
  same command takes from spawn to answering HTTP when started by hand — the floor for any
  process runtime;
- API p99 for GET /v1/sandboxes/{name} and GET /v1/routes beside GET /healthz on the same
  server — the floor set by uvicorn + FastAPI + the HTTP client.
DESIGN §9 bars: create → Ready p50 ≤ 1.5 s; API p99 ≤ 50 ms with 1,000 live sandboxes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.server import running_sandboxd  # noqa: E402

FORK = [sys.executable, "-m", "http.server", "${PORT}", "--bind", "127.0.0.1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bare_process_ready() -> float:
    """Spawn the fork command by hand and poll until it answers: the runtime's floor."""
    port = free_port()
    argv = [a.replace("${PORT}", str(port)) for a in FORK]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                return time.perf_counter() - started
            except httpx.HTTPError:
                time.sleep(0.005)
    finally:
        proc.terminate()
        proc.wait()


def create_to_ready(client: httpx.Client, name: str) -> float:
    spec = {"name": name, "forks": [{"service": "echo", "command": FORK}]}
    started = time.perf_counter()
    response = client.post("/v1/sandboxes", json=spec)
    response.raise_for_status()
    while True:
        body = client.get(f"/v1/sandboxes/{name}").json()
        if body["phase"] == "Ready":
            return time.perf_counter() - started
        if body["phase"] == "Failed":
            raise RuntimeError(f"{name} failed: {body['message']}")
        time.sleep(0.005)


def latencies(client: httpx.Client, paths: list[str]) -> list[float]:
    out = []
    for path in paths:
        started = time.perf_counter()
        client.get(path).raise_for_status()
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--sandboxes", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--database-url", default=os.environ.get("SANDBOXD_DATABASE_URL"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sandboxd-bench-") as tmp:
        catalog = Path(tmp) / "sandboxd.yaml"
        catalog.write_text(
            f"services:\n  - name: echo\n    routerPort: {free_port()}\n"
            f"    baseline: {{url: 'http://127.0.0.1:{free_port()}', health: /}}\n"
        )
        with (
            running_sandboxd(
                Path(tmp) / "data", catalog=catalog, database_url=args.database_url
            ) as server,
            server.client() as client,
        ):
            bare, ours = [], []
            for i in range(args.runs):  # interleaved: ours, peer, ours, peer, …
                ours.append(create_to_ready(client, f"bench-{i}"))
                bare.append(bare_process_ready())
                client.delete(f"/v1/sandboxes/bench-{i}")
            p50_ours, p50_bare = statistics.median(ours), statistics.median(bare)
            print(f"create → Ready, trivial fork, {args.runs} runs")
            print(f"  sandboxd p50 {p50_ours * 1000:7.1f} ms   p90 {pct(ours, 0.9) * 1000:7.1f} ms")
            print(f"  bare spawn→HTTP p50 {p50_bare * 1000:7.1f} ms (the floor)")
            print(f"  ratio sandboxd ÷ bare = {p50_ours / p50_bare:.2f}   bar: p50 ≤ 1500 ms")

            local = threading.local()

            def make(i: int) -> None:
                if not hasattr(local, "client"):
                    local.client = server.client()
                local.client.post("/v1/sandboxes", json={"name": f"live-{i}"}).raise_for_status()

            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                list(pool.map(make, range(args.sandboxes)))
            made = time.perf_counter() - started
            print(f"\n{args.sandboxes} fork-less sandboxes created in {made:.1f} s "
                  f"({args.sandboxes / made:.0f}/s, 16 concurrent clients)")  # fmt: skip
            names = [
                f"/v1/sandboxes/live-{random.randrange(args.sandboxes)}"
                for _ in range(args.requests)
            ]
            rounds: dict[str, list[float]] = {"get": [], "routes": [], "healthz": []}
            for _ in range(3):  # interleaved repetitions
                rounds["get"] += latencies(client, names[: args.requests // 3])
                rounds["routes"] += latencies(client, ["/v1/routes"] * (args.requests // 10))
                rounds["healthz"] += latencies(client, ["/healthz"] * (args.requests // 3))
            floor = pct(rounds["healthz"], 0.99)
            size = len(client.get("/v1/routes").content)
            print(
                f"API latency with {args.sandboxes} live sandboxes (sequential keep-alive client)"
            )
            for label, key in (
                ("GET /v1/sandboxes/{name}", "get"),
                (f"GET /v1/routes ({size // 1024} KiB)", "routes"),
                ("GET /healthz (floor)", "healthz"),
            ):
                values = rounds[key]
                p99 = pct(values, 0.99)
                p50 = statistics.median(values)
                print(f"  {label:32} p50 {p50 * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms  "
                      f"ratio p99 ÷ floor {p99 / floor:5.2f}")  # fmt: skip
            print("  bar: p99 ≤ 50 ms")


if __name__ == "__main__":
    main()
