"""The Kubernetes benchmark's cluster: a throwaway control plane, the baseline, and waits on it.

Each section gets its own `KubeControlPlane` (tests/support/kube.py: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok's fake Nodes), so what one section leaves —
hundreds of namespaces whose finalization takes the namespace controller at least 5 s each —
neither loads the next nor is collected by its sandboxd as orphans. Stopping a plane removes its
etcd data: nothing outlives the run.

Two changes to the test plane, both stated in the output: a /16 Service range (the fixture's /24
holds 253 ClusterIPs, and every fork has a Service), and optionally a controller-manager and
scheduler allowed more requests per second than their defaults (20 and 50 QPS), which otherwise
pace how fast many Deployments roll out.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks import _stats
from sandboxd.core.catalog import Catalog, parse_catalog
from tests.support.kube import KubeControlPlane
from tests.support.kube_objects import apply, baseline_workload

SERVICE_RANGE = "10.0.0.0/16"
BASELINE_NS = "bench-baseline"
SERVICE = "echo"
MANAGED = "app.kubernetes.io/managed-by=sandboxd"
SANDBOX_LABEL = "sandboxd.dev/sandbox"
CATALOG = f"""
services:
  - name: {SERVICE}
    baseline: {{url: "http://{SERVICE}.{BASELINE_NS}.svc.cluster.local:80"}}
    kubernetes: {{namespace: {BASELINE_NS}, deployment: {SERVICE}, service: {SERVICE}, port: 80}}
"""


class HarnessError(RuntimeError):
    """The benchmark itself could not run (a process died, an object was refused, a timeout)."""


@dataclass
class BenchPlane(KubeControlPlane):
    """The test plane with room for many Services and, with `controller_qps`, faster
    controllers. Fails loudly if the fixture no longer passes the flag it widens."""

    controller_qps: int | None = None

    def _spawn(self, name: str, argv: list[str]) -> None:
        if name == "kube-apiserver":
            flag = "--service-cluster-ip-range="
            if not any(arg.startswith(flag) for arg in argv):
                raise HarnessError(f"tests/support/kube.py no longer passes {flag}…")
            argv = [flag + SERVICE_RANGE if arg.startswith(flag) else arg for arg in argv]
        if self.controller_qps and name in ("kube-controller-manager", "kube-scheduler"):
            qps = self.controller_qps
            argv = [*argv, f"--kube-api-qps={qps}", f"--kube-api-burst={2 * qps}"]
        super()._spawn(name, argv)


@contextmanager
def control_plane(*, controller_qps: int | None = None) -> Iterator[BenchPlane]:
    """A started plane with the baseline installed; stopped (every process, its etcd data
    removed) on the way out, also on failure or Ctrl-C."""
    plane = BenchPlane(controller_qps=controller_qps)
    try:
        plane.start()
        with plane.client() as client:
            install_baseline(client)
        yield plane
    finally:
        plane.stop()


def catalog() -> Catalog:
    return parse_catalog(CATALOG, source="benchmarks/_kube_cluster.py")


def kube_version(plane: KubeControlPlane) -> str:
    with plane.client() as client:
        return str(client.get("/version").json().get("gitVersion", "?"))


def install_baseline(client: httpx.Client) -> None:
    """The baseline Deployment and Service the catalog's one service points at."""
    created = client.post("/api/v1/namespaces", json={"metadata": {"name": BASELINE_NS}})
    if created.status_code not in (201, 409):
        raise HarnessError(f"creating namespace {BASELINE_NS}: {created.text}")
    for obj in baseline_objects():
        apply(client, obj)


def baseline_objects() -> list[dict[str, Any]]:
    return baseline_workload(
        SERVICE,
        BASELINE_NS,
        image="registry.invalid/bench/echo:1.0",
        mode="baseline",
        requests={"cpu": "10m", "memory": "16Mi"},
    )


def selector_for(sandboxes: list[str]) -> str:
    return f"{SANDBOX_LABEL} in ({','.join(sandboxes)})"


async def available_sandboxes(http: httpx.AsyncClient, selector: str) -> set[str]:
    """The sandboxes (by label) whose fork Deployment has its replica available."""
    response = await http.get("/apis/apps/v1/deployments", params={"labelSelector": selector})
    if response.status_code != 200:
        raise HarnessError(f"listing Deployments: {response.status_code} {response.text[:300]}")
    out = set()
    for item in response.json().get("items") or []:
        meta, status = item["metadata"], item.get("status") or {}
        current = status.get("observedGeneration", 0) >= meta.get("generation", 1)
        if current and status.get("availableReplicas", 0) >= 1:
            out.add(meta["labels"][SANDBOX_LABEL])
    return out


async def settle(http: httpx.AsyncClient, sandboxes: list[str], *, timeout: float = 180) -> float:
    """Seconds until every one of `sandboxes` has its Deployment available: the controller-
    manager, scheduler and kwok have caught up, so the next arm starts on a quiet cluster."""
    started = time.perf_counter()
    selector = selector_for(sandboxes)
    while len(await available_sandboxes(http, selector)) < len(sandboxes):
        if time.perf_counter() - started > timeout:
            raise HarnessError(f"{len(sandboxes)} Deployments not available after {timeout:.0f} s")
        await asyncio.sleep(0.25)
    return time.perf_counter() - started


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) so far of each process by name, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out[name] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return out


def pct(seconds: list[float], q: float) -> float:
    """The `q`-quantile of durations in seconds (benchmarks/_stats.py works in nanoseconds)."""
    return _stats.percentile((max(1, int(s * 1e9)) for s in seconds), q) / 1e9
