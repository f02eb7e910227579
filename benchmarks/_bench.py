"""The router benchmark's servers and shared state; each scenario module adds its bars.

Layout (performance.md): the proxies — sandboxd-router and the nginx peer — on core 0; the
origin (nginx, 1 worker, 1 KiB), the SSE origin, wrk and the harness's own clients on core 1.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import _nginx, _routes, _wrk
from benchmarks._procs import Processes, free_port

TABLE = 1000  # sandboxes in the route table of the main router and of nginx
KEY = _routes.key_of(TABLE // 2)
SANDBOX = f"pr-{TABLE // 2}"
BAGGAGE = _routes.baggage(KEY)


@dataclass(frozen=True)
class Settings:
    reps: int = 3
    duration: float = 3  # seconds per wrk run
    concurrency: tuple[int, ...] = (8, 32, 128)
    rate: float = 1000  # open-loop requests per second at c=1
    latency_seconds: float = 3
    latency_reps: int = 5  # a c=1 p50 swings ±50 µs with the host's wake-ups: more runs
    sse_events: int = 150
    sse_interval_ms: float = 15
    propagation_runs: int = 50  # creates (fork-less sandboxes)
    propagation_deletes: int = 15  # deletes (sandboxes with a running fork)
    connections_held: int = 1000
    router: bool = True
    faults: int = 0  # decoy faults per sandbox on every service (`_routes.decoys`)
    populate: bool = False  # propagation: 1,000 sandboxes in the control plane (with faults: too)
    only: frozenset[str] = frozenset()  # scenarios to run (empty: all)

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            reps=1,
            duration=2,
            latency_seconds=1.5,
            latency_reps=1,
            sse_events=60,
            propagation_runs=15,
            propagation_deletes=5,
        )

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def runs(self, scenario: str) -> bool:
        return not self.only or scenario in self.only

    def table(self) -> str:
        """The route tables' faults, printed beside every bar."""
        if not self.faults:
            return "no faults in the tables"
        return (
            f"{self.faults} faults per sandbox on every service, matching none of the "
            "benchmark's requests"
        )


@dataclass(frozen=True)
class Target:
    """Something to load: a proxy's (or the origin's) HTTP port and its SSE port."""

    name: str
    echo: int
    sse: int
    proxy: bool = True


@dataclass(frozen=True)
class Bar:
    title: str
    measured: str
    bar: str
    ok: bool


@dataclass
class Bench:
    config: Settings
    tools: dict[str, str]
    work_dir: Path
    procs: Processes
    targets: list[Target] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    echo: _routes.Service = field(init=False)
    sse: _routes.Service = field(init=False)

    def target(self, name: str) -> Target:
        return next(t for t in self.targets if t.name == name)

    def wrk(self, port: int, c: int, duration: float, *, baggage: str = BAGGAGE) -> _wrk.WrkResult:
        url = f"http://127.0.0.1:{port}/"
        result, _ = _wrk.run(
            self.tools["wrk"], url, connections=c, duration=duration, baggage=baggage
        )
        return result

    def start_servers(self) -> None:
        self.echo = _routes.Service("echo", free_port(), free_port())
        sse_port = free_port()
        self.sse = _routes.Service("sse", sse_port, sse_port)
        origin = _nginx.origin_conf(
            self.work_dir / "origin",
            baseline_port=self.echo.baseline_port,
            fork_port=self.echo.fork_port,
        )
        self._nginx(
            "origin", cpu=1, ports=[self.echo.baseline_port, self.echo.fork_port], text=origin
        )
        script = Path(__file__).with_name("_sse_origin.py")
        self.procs.start("sse-origin", [sys.executable, str(script), str(sse_port)], cpu=1)
        self.procs.wait_accepting("sse-origin", sse_port)
        if self.config.router:
            router = _routes.start_static(
                self.procs,
                "router",
                work_dir=self.work_dir,
                services=[self.echo, self.sse],
                n=TABLE,
                faults=self.config.faults,
            )
            self.targets.append(Target("router", router.ports["echo"], router.ports["sse"]))
            health = _routes.healthz(router.admin_port) or {}
            print(f"router hot path: {health.get('hotPath', 'unknown')}")
        listen = {"echo": free_port(), "sse": free_port()}
        text = _nginx.routing_conf(
            self.work_dir / "nginx",
            listen=listen,
            upstreams={s.name: (s.baseline_port, s.fork_port) for s in (self.echo, self.sse)},
            keys=_routes.keys(TABLE),
        )
        self._nginx("nginx", cpu=0, ports=list(listen.values()), text=text)
        self.targets.append(Target("nginx", listen["echo"], listen["sse"]))
        self.targets.append(Target("direct", self.echo.fork_port, sse_port, proxy=False))

    def _nginx(self, name: str, *, cpu: int, ports: list[int], text: str) -> None:
        run_dir = self.work_dir / name
        conf = _nginx.write(run_dir, text)
        self.procs.start(name, _nginx.argv(self.tools["nginx"], run_dir, conf), cpu=cpu)
        for port in ports:
            self.procs.wait_accepting(name, port)

    def verify_routing(self) -> None:
        """curl once per case, then count every response of a 1 s wrk run (Lua)."""
        print("\nRouting checks (curl; then wrk c=32 for 1 s checking every response)")
        cases = [
            ("keyed", BAGGAGE, f"sandbox={SANDBOX}", "fork"),
            ("no baggage", None, "baseline", "baseline"),
            ("unknown key", _routes.baggage("nosuchkey0000"), "baseline", "baseline"),
        ]
        for target in (t for t in self.targets if t.proxy):
            for label, baggage, route, origin in cases:
                got = curl(target.echo, baggage)
                ok = got.get("sandboxd-route") == route and got.get("x-origin") == origin
                print(
                    f"  {target.name:6} {label:11} → status {got.get('status')}, "
                    f"sandboxd-route: {got.get('sandboxd-route')}, "
                    f"x-origin: {got.get('x-origin')}  {'ok' if ok else 'MISMATCH'}"
                )
                if not ok:
                    self.problems.append(f"{target.name} {label}: {got}")
            good, bad, sample = _wrk.route_check(
                self.tools["wrk"],
                f"http://127.0.0.1:{target.echo}/",
                work_dir=self.work_dir,
                baggage=BAGGAGE,
                expect_route=f"sandbox={SANDBOX}",
                expect_origin="fork",
            )
            print(
                f"  {target.name:6} under load: {good} routed right, {bad} wrong"
                + (f" (first wrong: {sample})" if bad else "")
            )
            if bad:
                self.problems.append(f"{target.name} misrouted {bad} of {good + bad} under load")
        if self.config.router and self.config.faults:
            router = self.target("router")
            self.check_decoys("router", router.echo)
            self.check_decoys("router", router.sse)

    def check_decoys(self, name: str, port: int, baggage: str = BAGGAGE) -> None:
        """The benchmarked key's decoys are compiled: a request matching the first one gets
        its `sandboxd-fault` (the benchmark's own requests match none)."""
        method, path, want = _routes.DECOY_HIT
        got = curl(port, baggage, path=path, method=method)
        ok = got.get("sandboxd-fault") == want
        print(
            f"  {name} port {port}: {method} {path} (matches a decoy) → status "
            f"{got.get('status')}, sandboxd-fault: {got.get('sandboxd-fault')}  "
            f"{'ok' if ok else 'MISMATCH'}"
        )
        if not ok:
            self.problems.append(f"{name} port {port}: the decoy faults did not fire: {got}")


def curl(port: int, baggage: str | None, *, path: str = "/", method: str = "GET") -> dict[str, str]:
    """Status and response headers (lower-cased names) of one request with curl."""
    argv = ["curl", "-sS", "-X", method, "-o", "/dev/null", "-D", "-", "--max-time", "5"]
    if baggage:
        argv += ["-H", f"baggage: {baggage}"]
    done = subprocess.run(
        [*argv, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=10
    )
    lines = done.stdout.splitlines()
    first = lines[0].split() if lines else []
    got = {"status": first[1] if len(first) > 1 else done.stderr.strip()}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        got[name.strip().lower()] = value.strip()
    return got
