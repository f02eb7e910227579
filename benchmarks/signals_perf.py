"""Where the router's CPU goes with recording on: `perf stat` on the router and on its telemetry
process under the signals benchmark's load (`signals.py`: a real control plane with 1,000
sandboxes, c=32, 1 KiB, router and telemetry process on core 0, wrk and the origin on core 1).

Run:  .venv/bin/python benchmarks/signals_perf.py [--reps 5] [--duration 2] [--apart]
      [--only router-off,router-on] [--variant NAME=BASE;ENV=VALUE;--router-arg ...]
      [--profile DIR]

For `router-off`, `router-on` and `router-otlp` (as in `signals.py`), interleaved, each run
prints wrk's req/s and, per request, the router's CPU (user, system), its system calls and
epoll calls (event loop iterations), context switches and page faults, its telemetry
process's CPU, and how busy each core was — with the share no process of ours accounts for
(core 0: besides the router, its telemetry process and the softirqs; core 1: besides the
harness and its children): on a shared VM the neighbours come and go, and a run they crowd
says nothing. The medians at the end are of the runs they left alone (`--noise`).

- `--apart`: each recording router's run again with its telemetry process moved to core 1
  (a diagnosis: what sharing a core costs the router; the product keeps both on one core);
- `--variant`: another router like BASE with more environment variables or arguments, e.g.
  `before=router-on;PYTHONPATH=/tmp/site` for a build of another commit
  (`benchmarks/_against.py` makes one) measured in the same run;
- `--profile DIR`: then `perf record` (cpu-clock, call graphs) of one run of each router.

Needs root (or perf_event_paranoid ≤ 0) to attach to the routers.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _perfstat, _recording, _routes, _wrk  # noqa: E402
from benchmarks._procs import (  # noqa: E402
    HarnessError,
    Processes,
    _descendants,
    ensure_tools,
    free_port,
    interrupt_on_signals,
    machine_load,
    prepare_self,
)
from benchmarks._propagation import populate  # noqa: E402
from benchmarks._stats import median  # noqa: E402
from tests.support.server import running_sandboxd  # noqa: E402

C = 32
CONFIGS = ("router-off", "router-on", "router-otlp")


@dataclass
class Run:
    rps: float
    requests: int
    wall: float
    router: _perfstat.Sample
    telemetry: _perfstat.Sample | None
    noise: tuple[float, float]  # of each core, busy but not by us (share of the run)

    def per(self, value: float) -> float:
        return value / max(1, self.requests)


def measure(pid: int, child: int | None, events: tuple[str, ...], tmp: Path, load: Any) -> Run:
    """One run of `load()` (a wrk run) with the router `pid` and its telemetry `child`
    counted."""
    counting = _perfstat.Counting([pid, *([child] if child else [])], events, tmp)
    ours = [os.getpid(), *_descendants(os.getpid())]
    core1 = [p for p in ours if p not in counting.pids]
    counting.start()
    time.sleep(0.3)  # (perf attached)
    cores, cpu1 = _perfstat.cores(), sum(_perfstat.cpu_of(p) for p in core1) + _reaped()
    started = time.monotonic()
    result = load()
    wall = time.monotonic() - started
    busy = _perfstat.busy(cores, _perfstat.cores())
    cpu1 = sum(_perfstat.cpu_of(p) for p in core1) + _reaped() - cpu1
    softirq = _perfstat.cores()[0][6] - cores[0][6]
    samples = counting.stop()
    telemetry = samples[1] if child else None
    ours0 = samples[0].cpu + (telemetry.cpu if telemetry else 0.0) + softirq
    noise = ((busy[0] - ours0) / wall, (busy[1] - cpu1) / wall)
    return Run(result.rps, result.requests, wall, samples[0], telemetry, noise)


def _reaped() -> float:
    """CPU seconds of this process's children waited for (wrk's, once a run is over)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def line(name: str, run: Run) -> str:
    r, t = run.router, run.telemetry
    text = (
        f"  {name:20} {run.rps / 1000:5.1f}k req/s; router {run.per(r.cpu) * 1e6:4.1f} µs/req "
        f"(user {run.per(r.user) * 1e6:4.1f}, sys {run.per(r.system) * 1e6:4.1f}), "
        f"{run.per(r.events.get('raw_syscalls:sys_enter', 0)):.2f} syscalls, "
        f"{run.per(r.epolls):.3f} epolls, "
        f"{run.per(r.voluntary + r.involuntary):.4f} switches, "
        f"{run.per(r.events.get('page-faults', 0)):.4f} faults"
    )
    for event in ("cycles", "instructions", "cache-misses"):
        if event in r.events:
            text += f", {run.per(r.events[event]):.0f} {event}"
    if t is not None:
        text += (
            f"; telemetry {run.per(t.cpu) * 1e6:.1f} µs/req, "
            f"{(t.voluntary + t.involuntary) / run.wall:.0f} switches/s, "
            f"{run.per(t.events.get('page-faults', 0)):.4f} faults/req"
        )
    return text + f"; noise core 0 {run.noise[0]:+.0%}, core 1 {run.noise[1]:+.0%}"


def summary(name: str, runs: list[Run]) -> str:
    def med(get: Any) -> float:
        return median([get(r) for r in runs])

    text = (
        f"  {name:20} {len(runs)} runs: {med(lambda r: r.rps) / 1000:.1f}k req/s "
        f"({'/'.join(f'{r.rps / 1000:.1f}' for r in runs)}); router "
        f"{med(lambda r: r.per(r.router.cpu)) * 1e6:.1f} µs/req (user "
        f"{med(lambda r: r.per(r.router.user)) * 1e6:.1f}, sys "
        f"{med(lambda r: r.per(r.router.system)) * 1e6:.1f}), "
        f"{med(lambda r: r.per(r.router.events.get('raw_syscalls:sys_enter', 0))):.2f} "
        f"syscalls, {med(lambda r: r.per(r.router.epolls)):.3f} epolls, "
        f"{med(lambda r: r.per(r.router.voluntary + r.router.involuntary)):.4f} switches, "
        f"{med(lambda r: r.per(r.router.events.get('page-faults', 0))):.4f} faults"
    )
    with_telemetry = [r for r in runs if r.telemetry is not None]
    if with_telemetry:
        cpu = median([r.per(r.telemetry.cpu) for r in with_telemetry if r.telemetry])
        text += f"; telemetry {cpu * 1e6:.1f} µs/req"
    return text


def start_variant(
    procs: Processes, name: str, host: str, common: dict[str, Any], base: dict[str, Any],
    extra: list[str], tmp: Path,
) -> _recording.Proxy:  # fmt: skip
    """A router as `_recording.start_router` starts `base`'s, with `extra` environment
    variables (NAME=VALUE) and arguments (--...)."""
    router = _routes.Router(name, {"echo": common["port"]}, free_port(), common["sandboxes"],
                            host=host)  # fmt: skip
    source = ["--control-url", common["server"].url, f"--token={common['token']}"]
    record = bool(base.get("record"))
    argv = _routes.argv(admin_port=router.admin_port, source=source, record=record, host=host)
    if record:
        argv += ["--access-log", str(tmp / f"{name}.log")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if base.get("otlp"):
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = base["otlp"]
    for item in extra:
        if item.startswith("--"):
            argv += item.split()
        elif item:
            key, _, value = item.partition("=")
            env[key] = value
    procs.start(name, argv, cpu=0, env=env)
    _routes.wait_ready(procs, router)
    return _recording.Proxy(name, host, common["port"])


def profile(procs: Processes, names: list[str], out_dir: Path, load: Any) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        out = out_dir / f"{name}.data"
        record = subprocess.Popen(
            ["perf", "record", "-e", "cpu-clock", "-F", "4000", "-g", "-o", str(out),
             "-p", str(procs.pid(name))],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.3)
        result = load(name)
        record.send_signal(signal.SIGINT)
        record.wait(60)
        _recording.settle(procs.pid(name))
        print(f"  profiled {name}: {result.requests} requests ({result.rps / 1000:.1f}k/s) → {out}")


def run(procs: Processes, tmp: Path, tools: dict[str, str], args: argparse.Namespace) -> None:
    events = _perfstat.events()
    print(f"perf events: {', '.join(events)}")
    origin = _recording.start_origin(procs, nginx=tools["nginx"], work_dir=tmp)
    port = free_port()
    catalog = tmp / "sandboxd.yaml"
    catalog.write_text(
        f"services:\n  - name: echo\n    routerPort: {port}\n"
        f"    baseline: {{url: 'http://127.0.0.1:{origin.baseline_port}', health: /}}\n"
    )
    with running_sandboxd(tmp / "control-plane", catalog=catalog) as server:
        live = populate(server, faults=0)
        token = (server.data_dir / "router-token").read_text().strip()
        otlp = _recording.start_otlp_receiver(procs)
        common = {"server": server, "token": token, "port": port, "sandboxes": len(live)}
        options: dict[str, dict[str, Any]] = {
            "router-off": {"record": False},
            "router-on": {"record": True, "access_log": tmp / "on.log"},
            "router-otlp": {"record": True, "access_log": tmp / "otlp.log",
                            "otlp": f"http://127.0.0.1:{otlp}"},
        }  # fmt: skip
        proxies = {
            name: _recording.start_router(procs, name, host=f"127.0.0.{i + 1}", **common, **opts)
            for i, (name, opts) in enumerate(options.items())
        }
        for i, variant in enumerate(args.variant):
            name, _, rest = variant.partition("=")
            base, *extra = rest.split(";")
            proxies[name] = start_variant(
                procs, name, f"127.0.0.{10 + i}", common, options[base], extra, tmp
            )
        names = args.only.split(",") if args.only else list(proxies)
        key = live["live-500"]
        script = _recording.write_traceparent_script(tmp)

        def load(name: str, duration: float = args.duration) -> _wrk.WrkResult:
            result, _ = _wrk.run(tools["wrk"], proxies[name].url, connections=C,
                                 duration=duration, baggage=_routes.baggage(key),
                                 script=script)  # fmt: skip
            return result

        for name in names:  # warm-up
            load(name, 1)
            _recording.settle(procs.pid(name))
        results: dict[str, list[Run]] = {}
        for rep in range(args.reps):
            for name in names if rep % 2 == 0 else reversed(names):
                pid = procs.pid(name)
                child = _recording.usage(pid).telemetry_pid
                for apart in (False, True) if args.apart and child else (False,):
                    label = f"{name} (apart)" if apart else name
                    if apart and child:
                        os.sched_setaffinity(child, {1})
                    try:
                        r = measure(pid, child, events, tmp, lambda n=name: load(n))
                    finally:
                        if apart and child:
                            os.sched_setaffinity(child, {0})
                    _recording.settle(pid)
                    results.setdefault(label, []).append(r)
                    print(f"rep {rep}" + line(label, r), flush=True)
        print(f"\nmedians of the runs the neighbours left alone (noise ≤ {args.noise:.0%} a core):")
        for label, runs in results.items():
            calm = [r for r in runs if max(r.noise) <= args.noise]
            print(summary(label, calm) if calm else f"  {label:20} no calm run")
        time.sleep(1.5)  # the telemetry processes' last tick: what they lost, logged
        for name in names:
            if _recording.usage(procs.pid(name)).telemetry_pid:
                print(f"  {name}: {_recording.records_lost(procs, name)} records lost in all")
        if args.profile is not None:
            profile(procs, names, args.profile, load)
    machine_load("after")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--duration", type=float, default=2)
    parser.add_argument("--apart", action="store_true", help="also telemetry on core 1")
    parser.add_argument("--only", help="comma-separated routers to run (default: all)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=BASE;...")
    parser.add_argument("--noise", type=float, default=0.08, help="a calm run's noise at most")
    parser.add_argument("--profile", type=Path, metavar="DIR")
    args = parser.parse_args()
    if not shutil.which("perf"):
        print("signals_perf: needs perf (Debian: linux-perf)", file=sys.stderr)
        return 2
    interrupt_on_signals()
    try:
        prepare_self()
        tools = ensure_tools()
    except HarnessError as e:
        print(f"signals_perf: {e}", file=sys.stderr)
        return 2
    machine_load("before")
    with tempfile.TemporaryDirectory(prefix="sandboxd-signals-perf-") as name:
        tmp = Path(name)
        (tmp / "logs").mkdir()
        procs = Processes(tmp / "logs")
        try:
            run(procs, tmp, tools, args)
        except HarnessError as e:
            print(f"signals_perf: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        finally:
            procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
