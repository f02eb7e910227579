"""Section 1: `KubernetesRuntime.apply` in process, beside a plain server-side-apply loop.

An arm provisions N sandboxes (one fork each), at most `concurrency` at once; each sandbox's
latency runs from its start (a slot free) to "every object applied": for sandboxd, `apply`
returning (it GETs the namespace, GETs the baseline Deployment and Service, applies the
namespace, then the quota, limit range, 2 network policies, Deployment and Service at once);
for the floor, the same 7 objects — built by the same `render` functions beforehand — applied
one after another by a bare httpx client (HTTP/2, like sandboxd's), with no reads and no
sandboxd logic. Every arm uses
fresh names, and the cluster settles (all its Deployments Available) before the next arm.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from benchmarks._kube_cluster import (
    BASELINE_NS,
    SERVICE,
    HarnessError,
    catalog,
    cpu_seconds,
    settle,
)
from sandboxd.core.catalog import Catalog
from sandboxd.core.plan import SandboxPlan, plan_sandbox
from sandboxd.core.spec import ForkSpec, SandboxSpec
from sandboxd.runtime.base import ForkState
from sandboxd.runtime.kubernetes import config, render
from sandboxd.runtime.kubernetes.client import FIELD_MANAGER, KubeClient, Obj, object_path
from sandboxd.runtime.kubernetes.runtime import UID, KubernetesRuntime, KubeSettings

SSA = {"fieldManager": FIELD_MANAGER, "force": "true"}
APPLY_PATCH = {"Content-Type": "application/apply-patch+yaml"}


@dataclass(frozen=True)
class ArmKind:
    label: str  # "sandboxd" or "floor"
    concurrency: int

    @property
    def title(self) -> str:
        return f"{self.label} c={self.concurrency}"


@dataclass
class ArmRun:
    kind: ArmKind
    latencies: list[float]  # seconds, one per sandbox
    wall: float  # first start to last finish
    cpu: dict[str, float]  # CPU seconds used meanwhile: "client" (this process), then by server
    settle: float = 0.0  # then until all its Deployments were Available

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall


@dataclass
class ApplyBench:
    """Each arm kind's own client — a runtime or a bare httpx client — so that one kind's
    connection pool (httpx walks it on every request) does not weigh on another's."""

    http: httpx.AsyncClient  # reads the baseline, watches the cluster settle
    catalog: Catalog
    baseline: tuple[Obj, Obj]
    servers: dict[str, int]  # name → pid, whose CPU time each arm reports
    runtimes: dict[ArmKind, KubernetesRuntime] = field(default_factory=dict)
    floors: dict[ArmKind, httpx.AsyncClient] = field(default_factory=dict)
    runs: list[ArmRun] = field(default_factory=list)


def kube_http(kubeconfig: Path, *, max_connections: int) -> httpx.AsyncClient:
    """A bare httpx client to the apiserver, pooled and on HTTP/2 like sandboxd's `KubeClient`,
    so the comparison is of the work done, not of the transport."""
    connection = config.from_kubeconfig(kubeconfig)
    return httpx.AsyncClient(
        base_url=connection.server,
        verify=connection.ssl_context,
        timeout=60,
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        headers={"Accept": "application/json"},
        http2=True,
    )


async def open_bench(
    kubeconfig: Path, *, kinds: list[ArmKind], max_requests: int, servers: dict[str, int]
) -> ApplyBench:
    http = kube_http(kubeconfig, max_connections=4)
    base = f"/namespaces/{BASELINE_NS}"
    deployment = await http.get(f"/apis/apps/v1{base}/deployments/{SERVICE}")
    service = await http.get(f"/api/v1{base}/services/{SERVICE}")
    bench = ApplyBench(http, catalog(), (deployment.json(), service.json()), servers)
    for kind in kinds:
        if kind.label == "sandboxd":
            client = KubeClient(config.from_kubeconfig(kubeconfig), max_requests=max_requests)
            runtime = KubernetesRuntime(client, catalog=bench.catalog, settings=KubeSettings())
            bench.runtimes[kind] = runtime
            await runtime.start()
        else:
            bench.floors[kind] = kube_http(kubeconfig, max_connections=max_requests)
    return bench


async def close_bench(bench: ApplyBench) -> None:
    for runtime in bench.runtimes.values():
        await runtime.close()
    for client in [*bench.floors.values(), bench.http]:
        await client.aclose()


def plans(names: list[str], catalog: Catalog) -> list[SandboxPlan]:
    expires = (datetime.now(UTC) + timedelta(hours=2)).isoformat(timespec="seconds")
    return [
        plan_sandbox(
            SandboxSpec(name=name, forks=[ForkSpec(service=SERVICE, env={"BENCH": name})]),
            uid=str(uuid.uuid4()),
            routing_key=uuid.uuid4().hex[:16],
            catalog=catalog,
            router_host="127.0.0.1",
            workdir=None,
            runtime="kubernetes",
            expires_at=expires.replace("+00:00", "Z"),
        )
        for name in names
    ]


def floor_objects(plan: SandboxPlan, baseline: tuple[Obj, Obj]) -> list[Obj]:
    """What `KubernetesRuntime.apply` applies for `plan` (default `KubeSettings`), namespace
    first, built with the same render functions."""
    assert plan.spec is not None
    assert plan.expires_at is not None
    settings = KubeSettings()
    namespace = render.namespace(plan.name, expires_at=plan.expires_at)
    namespace["metadata"]["annotations"][UID] = plan.uid
    (fork,) = plan.spec.forks
    fork = fork.model_copy(update={"env": dict(plan.forks[0].env)})
    return [
        namespace,
        render.resource_quota(plan.name, settings.quota),
        render.limit_range(plan.name),
        *render.network_policies(
            plan.name,
            router_namespace=settings.router_namespace,
            baseline_namespaces=[BASELINE_NS],
            allow_cidrs=[],
        ),
        render.fork_deployment(
            baseline[0], sandbox=plan.name, service=SERVICE, fork=fork, agent=plan.spec.agent
        ),
        render.fork_service(baseline[1], sandbox=plan.name, service=SERVICE),
    ]


async def run_arm(bench: ApplyBench, kind: ArmKind, names: list[str]) -> ArmRun:
    """Provision `names` by `kind` (plans and floor objects are made before the clock starts)."""
    batch = plans(names, bench.catalog)
    if kind.label == "sandboxd":
        steps = [_runtime_step(bench.runtimes[kind], plan) for plan in batch]
    else:
        floor = bench.floors[kind]
        steps = [_floor_step(floor, floor_objects(p, bench.baseline)) for p in batch]
    before = _cpu(bench.servers)
    latencies, wall = await _bounded(steps, kind.concurrency)
    used = {name: spent - before[name] for name, spent in _cpu(bench.servers).items()}
    return ArmRun(kind, latencies, wall, used)


def _cpu(servers: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of this process ("client") and of each server."""
    return {"client": time.process_time(), **cpu_seconds(servers)}


def _runtime_step(runtime: KubernetesRuntime, plan: SandboxPlan) -> Callable[[], Awaitable[None]]:
    async def step() -> None:
        forks = await runtime.apply(plan)
        failed = [f for f in forks if f.state == ForkState.EXITED]
        if failed:
            raise HarnessError(f"{plan.name}: {failed[0].reason}: {failed[0].message}")

    return step


def _floor_step(http: httpx.AsyncClient, objects: list[Obj]) -> Callable[[], Awaitable[None]]:
    bodies = [(object_path(o), json.dumps(o, separators=(",", ":"))) for o in objects]

    async def step() -> None:
        for path, body in bodies:
            response = await http.patch(path, params=SSA, content=body, headers=APPLY_PATCH)
            if response.status_code not in (200, 201):
                raise HarnessError(f"apply {path}: {response.status_code} {response.text[:300]}")

    return step


async def _bounded(
    steps: list[Callable[[], Awaitable[None]]], concurrency: int
) -> tuple[list[float], float]:
    """Run `steps`, at most `concurrency` at once; each one's seconds from its start (a slot
    free, so queueing for a slot is not counted), and the wall time of the whole batch."""
    slots = asyncio.Semaphore(concurrency)

    async def timed(step: Callable[[], Awaitable[None]]) -> float:
        async with slots:
            started = time.perf_counter()
            await step()
            return time.perf_counter() - started

    started = time.perf_counter()
    latencies = await asyncio.gather(*(timed(step) for step in steps))
    return list(latencies), time.perf_counter() - started


async def measure(
    kubeconfig: Path,
    *,
    kinds: list[ArmKind],
    sandboxes: int,
    reps: int,
    max_requests: int,
    servers: dict[str, int],
    warmup: int = 8,
) -> list[ArmRun]:
    """`reps` interleaved repetitions of every arm (in order, then reversed, …) after a
    warm-up of each (TLS connections, the apiserver's caches) that is not counted."""
    bench = await open_bench(kubeconfig, kinds=kinds, max_requests=max_requests, servers=servers)
    try:
        warm = [name for kind in kinds for name in _names(kind, "w", warmup)]
        for kind in kinds:
            await run_arm(bench, kind, _names(kind, "w", warmup))
        await settle(bench.http, warm)
        for rep in range(reps):
            for kind in kinds if rep % 2 == 0 else kinds[::-1]:
                names = _names(kind, f"r{rep}", sandboxes)
                run = await run_arm(bench, kind, names)
                run.settle = await settle(bench.http, names)
                bench.runs.append(run)
                print(
                    f"  rep {rep + 1}/{reps} {kind.title:14} {run.wall:6.2f} s for {sandboxes}, "
                    f"then {run.settle:5.2f} s until all Available",
                    flush=True,
                )
        return bench.runs
    finally:
        await close_bench(bench)


def _names(kind: ArmKind, tag: str, count: int) -> list[str]:
    prefix = f"{'sd' if kind.label == 'sandboxd' else 'fl'}{kind.concurrency}-{tag}"
    return [f"{prefix}-{i:03d}" for i in range(count)]
