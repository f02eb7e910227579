"""Kubernetes benchmark: how fast sandboxd provisions sandboxes against a real kube-apiserver.

Run:  .venv/bin/python benchmarks/kubernetes.py [--quick] [--sandboxes 100] [--reps 3]
      [--concurrency 32] [--max-requests 128] [--workers 32] [--controller-qps Q]
      [--only 1|2] [--database-url URL]

The cluster is real and local (tests/support/kube.py, binaries from scripts/envtest-assets):
etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok playing the kubelet of
2 fake Nodes, so Deployments really roll out and become Available (no container runs). Each
section gets a fresh control plane, on this same machine as the benchmark and sandboxd.

1. Runtime level, in process: `KubernetesRuntime.apply` for N sandboxes of one fork each, over a
   `KubeClient` whose `max_requests` is raised deliberately (default 64; client-go's are 5 QPS /
   burst 10): "create → all objects applied" per sandbox, and sandboxes/s, C at once and one at
   a time. The peer, in the same run: the same objects (same `render` functions) applied by a
   bare httpx server-side-apply loop, one object after another, C sandboxes at once and one at
   a time (the apiserver's own floor). Each of the four arms has its own client; interleaved
   repetitions, the order reversed every other one; medians of the repetitions; the cluster
   settles (all Deployments Available) between arms. Also the CPU each arm cost this process,
   kube-apiserver and etcd — all share this machine's cores.
2. End to end: `sandboxd serve --runtime kubernetes` (SANDBOXD_KUBE_MAX_REQUESTS,
   SANDBOXD_WORKERS), N sandboxes POSTed C at once: POST → Ready beside POST → Deployment
   Available as the cluster reports it (the floor for Ready); then DELETE → namespace gone (the
   namespace controller's floor) and → Deleted. The controllers run at their default QPS unless
   --controller-qps says otherwise: at 20 QPS the controller-manager paces the rollouts.

DESIGN §9 has no bar for this: figures and ratios only. Exit 0 whatever the numbers; 1 when
the harness failed, 130 when interrupted. Every process is stopped and every namespace goes
with its control plane's etcd data, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _kube_apply, _kube_e2e, _stats  # noqa: E402
from benchmarks._kube_apply import ArmKind, ArmRun  # noqa: E402
from benchmarks._kube_cluster import CATALOG, control_plane, kube_version, pct  # noqa: E402
from benchmarks._procs import cpu_busy  # noqa: E402
from tests.support.kube import KubeControlPlane  # noqa: E402
from tests.support.server import Sandboxd, running_sandboxd  # noqa: E402

SERVERS = ("kube-apiserver", "etcd")  # whose CPU time section 1 reports per sandbox
OBJECTS = "Namespace, ResourceQuota, LimitRange, 2 NetworkPolicies, Deployment, Service"


@dataclass(frozen=True)
class Settings:
    sandboxes: int = 100
    reps: int = 3
    concurrency: int = 32  # sandboxes in flight, in section 1 and as POSTs in section 2
    max_requests: int = 128  # KubeClient(max_requests=…) / SANDBOXD_KUBE_MAX_REQUESTS
    workers: int = 32  # SANDBOXD_WORKERS
    database_url: str | None = None
    settle_qps: int = 500  # section 1's controllers, so that an arm's rollout is over quickly
    controller_qps: int | None = None  # section 2's; None: the components' defaults
    sections: tuple[int, ...] = (1, 2)

    def __str__(self) -> str:
        return (
            f"N={self.sandboxes} sandboxes of 1 fork, {self.reps} reps, C={self.concurrency} at "
            f"once, kube max_requests={self.max_requests}, sandboxd workers={self.workers}"
        )


def settings(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 sandboxes instead of 100")
    parser.add_argument("--sandboxes", type=int, help="N (default 100, --quick 20)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=128)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--database-url", default=os.environ.get("SANDBOXD_DATABASE_URL"))
    parser.add_argument(
        "--controller-qps",
        type=int,
        help="section 2: kube-controller-manager and kube-scheduler --kube-api-qps "
        "(default: theirs, 20 and 50)",
    )
    parser.add_argument("--only", type=int, choices=(1, 2), help="run one section")
    args = parser.parse_args(argv)
    return Settings(
        sandboxes=args.sandboxes or (20 if args.quick else 100),
        reps=args.reps,
        concurrency=args.concurrency,
        max_requests=args.max_requests,
        workers=args.workers,
        database_url=args.database_url,
        controller_qps=args.controller_qps,
        sections=(args.only,) if args.only else (1, 2),
    )


def header(config: Settings) -> None:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "?",
    )  # fmt: skip
    busy = ", ".join(f"core {cpu} {share:.0%}" for cpu, share in sorted(cpu_busy(1.0).items()))
    print(f"kubernetes benchmark: {config}")
    print(
        f"machine: nproc {os.cpu_count()} ({len(os.sched_getaffinity(0))} usable), {model}; "
        f"{platform.python_implementation()} {platform.python_version()}; "
        f"percentiles: {_stats.BACKEND}"
    )
    print(f"CPU busy before (nothing of ours running): {busy}", flush=True)


def section_apply(plane: KubeControlPlane, config: Settings) -> None:
    print(
        f"\n1. runtime level (in process), Kubernetes {kube_version(plane)}: "
        f"create → all objects applied ({OBJECTS})\n"
        f"  cluster: controller-manager and scheduler at {config.settle_qps} QPS (defaults 20, "
        "50), so an arm's Deployments roll out in seconds and the next arm starts on a quiet "
        "cluster",
        flush=True,
    )
    kinds = [
        ArmKind("sandboxd", config.concurrency),
        ArmKind("floor", config.concurrency),
        ArmKind("sandboxd", 1),
        ArmKind("floor", 1),
    ]
    runs = asyncio.run(
        _kube_apply.measure(
            plane.kubeconfig,
            kinds=kinds,
            sandboxes=config.sandboxes,
            reps=config.reps,
            max_requests=config.max_requests,
            servers={name: plane.procs[name].pid for name in SERVERS},
        )
    )
    report_apply(kinds, runs, config)


def report_apply(kinds: list[ArmKind], runs: list[ArmRun], config: Settings) -> None:
    print(
        f"  N={config.sandboxes} per arm; KubeClient(max_requests={config.max_requests}) "
        f"(default 64); medians of {config.reps} reps; latency from a free slot:"
    )
    summary: dict[ArmKind, tuple[float, float, float]] = {}
    for kind in kinds:
        mine = [r for r in runs if r.kind == kind]
        p50s = [pct(r.latencies, 0.5) for r in mine]
        p50 = _stats.median(p50s)
        p99 = _stats.median(pct(r.latencies, 0.99) for r in mine)
        rate = _stats.median(r.rate for r in mine)
        summary[kind] = (p50, p99, rate)
        reps = " / ".join(f"{v * 1000:.0f}" for v in p50s)
        print(
            f"  {kind.title:14} p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  "
            f"{rate:6.1f} sandboxes/s   (per-rep p50 {reps} ms)"
        )
    loaded, floor_loaded, alone, floor_alone = kinds
    for ours, theirs, why in (
        (loaded, floor_alone, "the sequential floor"),
        (loaded, floor_loaded, "the floor at equal load"),
        (alone, floor_alone, "the sequential floor, both sequential"),
    ):
        (p50, _, rate), (p50_floor, _, rate_floor) = summary[ours], summary[theirs]
        print(
            f"  ratio {ours.title} ÷ {theirs.title} ({why}): p50 {p50 / p50_floor:.2f}, "
            f"throughput {rate / rate_floor:.2f}"
        )
    print("  CPU per sandbox while applying (medians; the servers' includes the controllers' "
          "and kwok's calls meanwhile):")  # fmt: skip
    for kind in kinds:
        mine = [r for r in runs if r.kind == kind]
        shares = ", ".join(
            f"{who} {_stats.median(r.cpu[who] for r in mine) / config.sandboxes * 1000:5.1f} ms"
            for who in ("client", *SERVERS)
        )
        print(f"  {kind.title:14} {shares}")
    settles = [r.settle for r in runs]
    print(
        f"  after each arm, until all its Deployments were Available (controller-manager, "
        f"scheduler, kwok): median {_stats.median(settles):.1f} s, max {max(settles):.1f} s"
    )


def section_e2e(plane: KubeControlPlane, config: Settings) -> None:
    db = "PostgreSQL" if config.database_url else "SQLite"
    qps = f"{config.controller_qps} QPS" if config.controller_qps else "their default QPS (20, 50)"
    print(
        f"\n2. end to end: sandboxd serve --runtime kubernetes, N={config.sandboxes} sandboxes "
        f"POSTed {config.concurrency} at once (SANDBOXD_KUBE_MAX_REQUESTS={config.max_requests}, "
        f"SANDBOXD_WORKERS={config.workers}, {db})\n"
        f"  cluster: controller-manager and scheduler at {qps}",
        flush=True,
    )
    names = [f"e2e-{i:03d}" for i in range(config.sandboxes)]
    with tempfile.TemporaryDirectory(prefix="sandboxd-kube-bench-") as tmp:
        catalog = Path(tmp) / "sandboxd.yaml"
        catalog.write_text(CATALOG)
        with running_sandboxd(
            Path(tmp) / "data",
            catalog=catalog,
            database_url=config.database_url,
            env=_kube_e2e.serve_env(max_requests=config.max_requests, workers=config.workers),
            args=_kube_e2e.serve_args(plane.kubeconfig),
        ) as server:
            try:
                times = asyncio.run(_e2e(plane, server, names, config.concurrency))
            except BaseException:
                print(f"--- sandboxd.log (tail)\n{server.log()[-3000:]}", file=sys.stderr)
                raise
            log = (Path(tmp) / "data" / "sandboxd.log").read_text(errors="replace")
    _kube_e2e.report(times, sandboxes=config.sandboxes)
    errors = [line for line in log.splitlines() if " ERROR " in line or " WARNING " in line]
    if errors:
        print(f"  sandboxd logged {len(errors)} warnings/errors, e.g.: {errors[0][:200]}")


async def _e2e(
    plane: KubeControlPlane, server: Sandboxd, names: list[str], concurrency: int
) -> _kube_e2e.Timeline:
    assert server.proc is not None
    pids = {"sandboxd": server.proc.pid}
    pids |= {name: plane.procs[name].pid for name in (*SERVERS, "kube-controller-manager")}
    async with _kube_apply.kube_http(plane.kubeconfig, max_connections=4) as kube:
        return await _kube_e2e.measure(server, kube, names, concurrency=concurrency, pids=pids)


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt  # unwinds through the `finally`s that stop every process


def main(argv: list[str] | None = None) -> int:
    config = settings(argv)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    header(config)
    try:
        if 1 in config.sections:
            with control_plane(controller_qps=config.settle_qps) as plane:
                section_apply(plane, config)
        if 2 in config.sections:
            with control_plane(controller_qps=config.controller_qps) as plane:
                section_e2e(plane, config)
    except (RuntimeError, httpx.HTTPError, OSError) as e:  # HarnessError is a RuntimeError
        print(f"\nkubernetes benchmark: harness failed: {e!r}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: every process stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
