"""Section 2: `sandboxd serve --runtime kubernetes` end to end, through the REST API.

N sandboxes (one fork each) are POSTed at most `concurrency` at once; one watcher lists
GET /v1/sandboxes every POLL_API seconds and notes when each is first Ready, another lists the
cluster's Deployments every POLL_KUBE seconds and notes when each fork's Deployment is first
Available — the cluster's own view, the floor for sandboxd's Ready. Then every sandbox is
DELETEd and timed until its namespace is gone (the namespace controller finalized it; the
cluster's view) and until sandboxd says Deleted.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks._kube_cluster import (
    MANAGED,
    SANDBOX_LABEL,
    SERVICE,
    HarnessError,
    available_sandboxes,
    cpu_seconds,
    pct,
)
from tests.support.server import Sandboxd

POLL_API = 0.25  # a list of 100 sandboxes costs sandboxd ~12 ms of CPU: ~5 % of a core at 4/s
POLL_KUBE = 0.25
TIMEOUT = 240.0
Watcher = Coroutine[Any, Any, None]


@dataclass
class Timeline:
    """Monotonic seconds (perf_counter) at which each sandbox passed each step."""

    posted: dict[str, float] = field(default_factory=dict)
    accepted: dict[str, float] = field(default_factory=dict)  # 201 received
    available: dict[str, float] = field(default_factory=dict)  # Deployment Available (cluster)
    ready: dict[str, float] = field(default_factory=dict)  # phase Ready (sandboxd)
    failed: dict[str, str] = field(default_factory=dict)  # phase Failed: reason and message
    delete_sent: dict[str, float] = field(default_factory=dict)
    gone: dict[str, float] = field(default_factory=dict)  # namespace 404 (cluster)
    deleted: dict[str, float] = field(default_factory=dict)  # phase Deleted (sandboxd)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # phase → process → seconds
    reconciles: dict[str, float] = field(default_factory=dict)  # phase → sandboxd's passes

    @staticmethod
    def spans(start: dict[str, float], end: dict[str, float]) -> list[float]:
        """Each sandbox's seconds from `start` to `end`, for those that reached both."""
        return [end[name] - start[name] for name in start if name in end]


def serve_args(kubeconfig: Path) -> list[str]:
    return ["--runtime", "kubernetes", "--kubeconfig", str(kubeconfig)]


def serve_env(*, max_requests: int, workers: int) -> dict[str, str]:
    return {
        "SANDBOXD_KUBE_MAX_REQUESTS": str(max_requests),
        "SANDBOXD_WORKERS": str(workers),
        "SANDBOXD_HEALTH_TIMEOUT": "120",
        "SANDBOXD_REAPER_INTERVAL": "10",  # the default (running_sandboxd's is 1 s for tests)
    }


async def measure(
    server: Sandboxd,
    kube: httpx.AsyncClient,
    names: list[str],
    *,
    concurrency: int,
    pids: dict[str, int],
) -> Timeline:
    """Provision then remove `names`; also the CPU seconds `pids` used in each phase."""
    headers = {"Authorization": f"Bearer {server.token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=server.url, headers=headers, limits=limits, timeout=60
    ) as api:
        times = Timeline()
        for phase, run in (("provision", _provision), ("remove", _remove)):
            cpu, passes = cpu_seconds(pids), await _reconciles(api)
            await run(api, kube, names, times, concurrency=concurrency)
            if not times.ready:
                raise HarnessError(f"no sandbox became Ready: {times.failed}")
            times.reconciles[phase] = await _reconciles(api) - passes
            times.cpu[phase] = {k: v - cpu[k] for k, v in cpu_seconds(pids).items()}
        return times


async def _reconciles(api: httpx.AsyncClient) -> float:
    """sandboxd's reconcile passes so far (all results), from its Prometheus metrics."""
    text = (await api.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("sandboxd_reconcile_total{")
    )


async def _provision(
    api: httpx.AsyncClient,
    kube: httpx.AsyncClient,
    names: list[str],
    times: Timeline,
    *,
    concurrency: int,
) -> None:
    async def post(name: str) -> None:
        spec = {"name": name, "forks": [{"service": SERVICE, "env": {"BENCH": name}}]}
        times.posted[name] = time.perf_counter()
        response = await api.post("/v1/sandboxes", json=spec)
        times.accepted[name] = time.perf_counter()
        if response.status_code != 201:
            raise HarnessError(f"POST {name}: {response.status_code} {response.text[:300]}")

    watchers = [_watch_ready(api, names, times), _watch_available(kube, names, times)]
    load = _bounded([functools.partial(post, n) for n in names], concurrency)
    await _with_watchers(load, watchers)


async def _remove(
    api: httpx.AsyncClient,
    kube: httpx.AsyncClient,
    names: list[str],
    times: Timeline,
    *,
    concurrency: int,
) -> None:
    async def delete(name: str) -> None:
        times.delete_sent[name] = time.perf_counter()
        response = await api.delete(f"/v1/sandboxes/{name}")
        if response.status_code not in (200, 202):
            raise HarnessError(f"DELETE {name}: {response.status_code} {response.text[:300]}")

    watcher = _watch_deleted(api, kube, names, times)
    load = _bounded([functools.partial(delete, n) for n in names], concurrency)
    await _with_watchers(load, [watcher])


async def _with_watchers(load: Coroutine[Any, Any, None], watchers: list[Watcher]) -> None:
    """Run the requests and the watchers; done when every watcher is (or one fails)."""
    tasks = [asyncio.create_task(w) for w in watchers]
    try:
        await load
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(*tasks)
    except TimeoutError as e:
        raise HarnessError(f"not done after {TIMEOUT:.0f} s") from e
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _bounded(calls: list[Callable[[], Awaitable[None]]], concurrency: int) -> None:
    slots = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[None]]) -> None:
        async with slots:
            await call()

    await asyncio.gather(*(one(c) for c in calls))


async def _watch_ready(api: httpx.AsyncClient, names: list[str], times: Timeline) -> None:
    """Until every sandbox is Ready or Failed (a Failed one is told in the report, and left
    out of the latencies)."""
    while len(times.ready) + len(times.failed) < len(names):
        response = await api.get("/v1/sandboxes")
        now = time.perf_counter()
        for item in response.json()["items"]:
            if item["phase"] == "Ready":
                times.ready.setdefault(item["name"], now)
            elif item["phase"] == "Failed":
                times.failed.setdefault(item["name"], f"{item['reason']}: {item['message']}")
        await asyncio.sleep(POLL_API)


async def _watch_available(kube: httpx.AsyncClient, names: list[str], times: Timeline) -> None:
    while not set(names) - times.failed.keys() <= times.available.keys():
        found = await available_sandboxes(kube, MANAGED)
        now = time.perf_counter()
        for name in found & times.posted.keys():
            times.available.setdefault(name, now)
        await asyncio.sleep(POLL_KUBE)


async def _watch_deleted(
    api: httpx.AsyncClient, kube: httpx.AsyncClient, names: list[str], times: Timeline
) -> None:
    """A namespace's 404 from one list of the cluster's; sandboxd's Deleted only for sandboxes
    whose namespace is gone (it cannot be Deleted before), so polling stays light."""
    while len(times.deleted) < len(names):
        response = await kube.get("/api/v1/namespaces", params={"labelSelector": MANAGED})
        now = time.perf_counter()
        present = {
            (ns["metadata"].get("labels") or {}).get(SANDBOX_LABEL)
            for ns in response.json()["items"]
        }
        for name in times.delete_sent.keys() - present:
            times.gone.setdefault(name, now)
        waiting = [n for n in times.gone if n not in times.deleted]
        bodies = await asyncio.gather(*(api.get(f"/v1/sandboxes/{n}") for n in waiting))
        now = time.perf_counter()
        for name, body in zip(waiting, bodies, strict=True):
            if body.json().get("phase") == "Deleted":
                times.deleted[name] = now
        await asyncio.sleep(POLL_KUBE)


def report(t: Timeline, *, sandboxes: int) -> None:
    spans = Timeline.spans
    n = sandboxes
    ready_all = max(t.ready.values()) - min(t.posted.values())
    deleted_all = max(t.deleted.values()) - min(t.delete_sent.values())
    # a Failed sandbox's namespace is already going when it is DELETEd: leave it out
    delete_sent = {k: v for k, v in t.delete_sent.items() if k not in t.failed}
    rows = [
        ("POST → 201", spans(t.posted, t.accepted), ""),
        (
            "POST → Deployment Available",
            spans(t.posted, t.available),
            f"(the cluster's view, polled every {POLL_KUBE * 1000:.0f} ms)",
        ),
        (
            "POST → phase Ready",
            spans(t.posted, t.ready),
            f"(polled every {POLL_API * 1000:.0f} ms); all {n} in {ready_all:.1f} s "
            f"= {n / ready_all:.1f} sandboxes/s",
        ),
        (
            "DELETE → namespace gone",
            spans(delete_sent, t.gone),
            f"(finalized; polled every {POLL_KUBE * 1000:.0f} ms)",
        ),
        (
            "DELETE → phase Deleted",
            spans(delete_sent, t.deleted),
            f"; all {n} in {deleted_all:.1f} s = {n / deleted_all:.1f} sandboxes/s",
        ),
    ]
    for label, values, note in rows:
        line = f"  {label:28} p50 {_fmt(pct(values, 0.5))}  p99 {_fmt(pct(values, 0.99))}  {note}"
        print(line.rstrip())
    if t.failed:
        name, why = next(iter(t.failed.items()))
        print(f"  {len(t.failed)} of {n} sandboxes Failed (left out above), e.g. {name}: {why}")
    ready, available = pct(spans(t.posted, t.ready), 0.5), pct(spans(t.posted, t.available), 0.5)
    gone = pct(spans(delete_sent, t.gone), 0.5)
    deleted = pct(spans(delete_sent, t.deleted), 0.5)
    print(
        f"  ratio Ready p50 ÷ Available p50 = {ready / available:.2f}; "
        f"Deleted p50 ÷ namespace gone p50 = {deleted / gone:.2f}"
    )
    for phase, key, wall in (
        ("provisioning", "provision", ready_all),
        ("deleting", "remove", deleted_all),
    ):
        used = t.cpu[key]
        shares = ", ".join(f"{who} {sec:.1f} s ({sec / wall:.0%})" for who, sec in used.items())
        passes = t.reconciles[key]
        print(
            f"  while {phase} ({wall:.1f} s): sandboxd ran {passes:.0f} reconciles "
            f"({passes / wall:.0f}/s); CPU (% of one core): {shares}"
        )


def _fmt(seconds: float) -> str:
    return f"{seconds * 1000:7.0f} ms" if seconds < 10 else f"{seconds:7.1f} s "
