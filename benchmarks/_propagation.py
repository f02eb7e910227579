"""Route propagation (bar 6): an API call returns → the first request routed by the new table.

A real control plane (`sandboxd serve`, started as the tests start it) and a router
long-polling it. Two changes are timed, each from the moment the API call returns:

- create: `POST /v1/sandboxes` of a fork-less sandbox puts its key in the table at once. A
  fork-less key goes to the baseline (DESIGN §6), so each carries one fault that the probe's
  requests match, once: timed to the first request answered with its `sandboxd-fault` (this
  was timed to the router's /healthz counting the sandbox, whose connection per poll, back to
  back, slowed the router down by more than the change it was timing);
- delete: `DELETE /v1/sandboxes/{name}` of a sandbox with a running fork takes its key out of
  the table at once: timed to the first request with its key answered `sandboxd-route:
  baseline`. This one is seen on the request path itself;
- faults: `PATCH /v1/sandboxes/{name} {"faults": [...]}` adding, to a sandbox's decoys, a fault
  that every probe request matches: timed to the first request answered with that fault's
  `sandboxd-fault` header.

With `--faults N` (or `--populate`: N = 0) the control plane first holds 1,000 fork-less
sandboxes with N decoy faults each (`_routes.decoys`), so every change above rebuilds a table
of all of them; the PATCHed sandboxes are among them. Without, the PATCHed ones are the
created ones (no decoys).

The probe sends requests back to back on one keep-alive connection; 2 s without the change is
a miss.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks._bench import Bar, Bench
from benchmarks._loadgen import Closed, Probe
from benchmarks._procs import HarnessError, free_port
from benchmarks._routes import Router, argv, baggage, decoys, wait_ready
from benchmarks._stats import ms, percentile

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sandboxd.runtime.local import OWNER, owner_id  # noqa: E402
from sandboxd.runtime.processes import find_marked  # noqa: E402
from tests.support.server import Sandboxd, running_sandboxd  # noqa: E402

GIVE_UP_NS = 2_000_000_000
POPULATION = 1000  # sandboxes with decoy faults already in the table (with --faults)
FORK = [sys.executable, "-m", "http.server", "${PORT}", "--bind", "127.0.0.1"]
HIT: dict[str, object] = {
    "id": "created", "service": "echo", "kind": "http_error", "status": 503,
    "httpMethod": "GET", "times": 1,
}  # fmt: skip
"""The fault a created sandbox carries: the first request with its key shows the new table."""


@dataclass
class Timings:
    how: str
    samples_ns: list[int] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    odd: dict[str, int] = field(default_factory=dict)  # unexpected answers seen while polling
    keys: dict[str, str] = field(default_factory=dict)  # sandbox → routing key (creates)


def propagation(bench: Bench) -> list[Bar]:
    cfg = bench.config
    port = free_port()
    catalog = bench.work_dir / "sandboxd.yaml"
    catalog.write_text(
        f"services:\n  - name: echo\n    routerPort: {port}\n"
        f"    baseline: {{url: 'http://127.0.0.1:{bench.echo.baseline_port}', health: /}}\n"
    )
    data_dir = bench.work_dir / "control-plane"
    try:
        with (
            running_sandboxd(data_dir, catalog=catalog) as server,
            server.client() as client,
        ):
            live = populate(server, faults=cfg.faults) if cfg.populate else {}
            router = Router("router-control-plane", {"echo": port}, free_port(), len(live))
            source = ["--control-url", server.url, f"--token={server.token}"]
            bench.procs.start(router.name, argv(admin_port=router.admin_port, source=source), cpu=0)
            try:
                wait_ready(bench.procs, router)
                probe = Probe(port)
                created = creates(client, probe, runs=cfg.propagation_runs)
                deleted = deletes(client, probe, runs=cfg.propagation_deletes)
                targets = _spread(live, cfg.propagation_runs) or created.keys
                patched = patches(client, probe, targets, decoy_count=cfg.faults)
                probe.close()
            finally:
                bench.procs.stop(router.name)
    finally:
        _stop_leftover_forks(data_dir)  # forks outlive sandboxd by design; none may outlive us
    table = f"{len(live)} sandboxes with {cfg.faults} faults each" if live else "no more"
    return report([created, deleted, patched], table=table)


def populate(server: Sandboxd, *, faults: int) -> dict[str, str]:
    """POPULATION fork-less sandboxes with `faults` decoys on echo: name → routing key."""
    local = threading.local()

    def make(i: int) -> tuple[str, str]:
        if not hasattr(local, "client"):
            local.client = server.client()
        name = f"live-{i}"
        response = local.client.post(
            "/v1/sandboxes", json={"name": name, "faults": decoys("echo", faults)}
        )
        response.raise_for_status()
        return name, str(response.json()["routingKey"])

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        made = dict(pool.map(make, range(POPULATION)))
    print(
        f"\n(propagation: {POPULATION} fork-less sandboxes with {faults} faults each created "
        f"in {time.perf_counter() - started:.1f} s)"
    )
    return made


def _spread(live: dict[str, str], runs: int) -> dict[str, str]:
    """`runs` of the sandboxes, spread over the table (none when there are none)."""
    names = list(live)[:: max(1, len(live) // runs)][:runs]
    return {name: live[name] for name in names}


def _stop_leftover_forks(data_dir: Path) -> None:
    """SIGKILL, by pid, any process our control plane started and did not stop (a run that
    failed or was interrupted before its deletes completed)."""
    for info, _ in find_marked(OWNER, owner_id(data_dir)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(info.pgid, signal.SIGKILL)


def creates(client: httpx.Client, probe: Probe, *, runs: int) -> Timings:
    """Each new sandbox carries one fault every probe request matches, firing once: a
    fork-less sandbox's key is routed to the baseline (DESIGN §6), so without it no request
    could show that the table changed."""
    out = Timings("POST (fork-less, one fault) → first request answered with its sandboxd-fault")
    for i in range(runs):
        name = f"prop-{i}"
        key, t0 = _created(client, name, faults=[HIT])
        out.keys[name] = key
        _poll(
            out, probe, name=name, key=key, want=f"http_error; id={HIT['id']}", t0=t0,
            header="sandboxd-fault", expect=503,
        )  # fmt: skip
    return out


def deletes(client: httpx.Client, probe: Probe, *, runs: int) -> Timings:
    out = Timings("DELETE (forked) → first request answered sandboxd-route: baseline")
    names = [f"fork-{i}" for i in range(runs)]
    keys = {}
    try:
        for name in names:  # forks start in parallel
            spec = {"name": name, "forks": [{"service": "echo", "command": FORK}]}
            response = client.post("/v1/sandboxes", json=spec)
            response.raise_for_status()
            keys[name] = response.json()["routingKey"]
        for name in names:
            _until(client, name, "Ready")
            if not _wait(probe, keys[name], f"sandbox={name}"):
                raise HarnessError(f"{name} is Ready but the router does not route to its fork")
        for name in names:
            response = client.delete(f"/v1/sandboxes/{name}")
            t0 = time.perf_counter_ns()
            response.raise_for_status()
            _poll(out, probe, name=name, key=keys[name], want="baseline", t0=t0)
    finally:
        for name in keys:  # idempotent; then wait for each fork process to be stopped
            client.delete(f"/v1/sandboxes/{name}")
        for name in keys:
            _until(client, name, "Deleted")
    return out


def patches(
    client: httpx.Client, probe: Probe, targets: dict[str, str], *, decoy_count: int
) -> Timings:
    """PATCH each target's faults to its decoys plus one every probe request matches."""
    out = Timings(
        "PATCH faults (+1 matching every request) → first request answered with its sandboxd-fault"
    )
    for i, (name, key) in enumerate(targets.items()):
        hit = {"id": f"hit-{i}", "service": "echo", "kind": "http_error", "status": 503}
        faults = [*decoys("echo", decoy_count), {**hit, "httpMethod": "GET"}]
        if not _wait(probe, key, "", header="sandboxd-fault"):
            raise HarnessError(f"{name}: a fault fires before the PATCH")
        response = client.patch(f"/v1/sandboxes/{name}", json={"faults": faults})
        t0 = time.perf_counter_ns()
        response.raise_for_status()
        _poll(
            out, probe, name=name, key=key, want=f"http_error; id={hit['id']}", t0=t0,
            header="sandboxd-fault", expect=503,
        )  # fmt: skip
    return out


def _created(
    client: httpx.Client, name: str, *, faults: list[dict[str, object]]
) -> tuple[str, int]:
    response = client.post("/v1/sandboxes", json={"name": name, "faults": faults})
    t0 = time.perf_counter_ns()
    response.raise_for_status()
    return response.json()["routingKey"], t0


def _until(client: httpx.Client, name: str, phase: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = client.get(f"/v1/sandboxes/{name}")
        if response.status_code == 404 and phase == "Deleted":
            return
        body = response.json()
        if body.get("phase") == phase:
            return
        if body.get("phase") == "Failed":
            raise HarnessError(f"sandbox {name} failed: {body.get('message')}")
        time.sleep(0.05)
    raise HarnessError(f"sandbox {name} not {phase} in 60 s")


def _wait(
    probe: Probe, key: str, want: str, *, seconds: float = 2, header: str = "sandboxd-route"
) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Closed):
            if probe.get(baggage=baggage(key))[1].get(header, "") == want:
                return True
        time.sleep(0.01)
    return False


def _poll(
    out: Timings,
    probe: Probe,
    *,
    name: str,
    key: str,
    want: str,
    t0: int,
    header: str = "sandboxd-route",
    expect: int = 200,
) -> None:
    """Until a request with `key` is answered with `header: want` (status `expect`)."""
    route, status = "", 0
    while time.perf_counter_ns() - t0 < GIVE_UP_NS:
        try:
            status, headers = probe.get(baggage=baggage(key))
        except Closed as e:
            out.odd[str(e)] = out.odd.get(str(e), 0) + 1
            continue
        route = headers.get(header, "")
        if route == want and status == expect:
            out.samples_ns.append(time.perf_counter_ns() - t0)
            return
        if status != 200:
            answer = f"status {status}, {header}: {route}"
            out.odd[answer] = out.odd.get(answer, 0) + 1
    out.misses.append(f"{name}: last answer {status}, {header} {route!r}")


def report(timings: list[Timings], *, table: str) -> list[Bar]:
    print(
        "\nRoute propagation (real control plane, router long-polling it), from the moment "
        f"the API call returns; the table also holds {table}"
    )
    worst, total, missed = 0.0, 0, 0
    for t in timings:
        p99 = percentile(t.samples_ns, 0.99)
        worst, total, missed = max(worst, p99), total + len(t.samples_ns), missed + len(t.misses)
        print(f"  {t.how}")
        print(
            f"    {len(t.samples_ns)} sandboxes: p50 {ms(percentile(t.samples_ns, 0.5))}, "
            f"p99 {ms(p99)}, max {ms(max(t.samples_ns, default=0))}, {len(t.misses)} missed"
        )
        for answer, count in t.odd.items():
            print(f"    seen while waiting: {count} times: {answer}")
        for miss in t.misses:
            print(f"    missed: {miss}")
    return [
        Bar(
            "route propagation, API call returns → routed by the new table, p99",
            f"{ms(worst)} (worst of create, delete and PATCH faults; {total} timed, "
            f"{missed} missed; the table also holds {table})",
            "≤ 20 ms",
            total > 0 and missed == 0 and worst <= 20_000_000,
        )
    ]
