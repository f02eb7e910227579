"""The baseline container's entrypoint: a catalog's baselines, run as `sandboxd serve
--start-baseline` runs them on a laptop.

Every service with a baseline `command` runs from the catalog's directory with the catalog's
env, `PORT` from its url, `SANDBOXD_SANDBOX=""` and `SANDBOXD_SERVICE_<NAME>_URL` (the router
address of every routed service, so a request tagged for a sandbox reaches its forks). None of
this process's own `SANDBOXD_*` settings reach them.

The container shares sandboxd's network namespace (see docker-compose.yml), so it exits non-zero
when a baseline dies or when sandboxd stops answering: a restarted sandboxd container has a new
namespace, and only a restart (Docker's restart policy) moves this container into it.

    SANDBOXD_CATALOG      the catalog file (required)
    SANDBOXD_ROUTER_HOST  the router's host in SANDBOXD_SERVICE_<NAME>_URL (default 127.0.0.1)
    SANDBOXD_WATCH_URL    sandboxd's /healthz; unset: sandboxd is not watched
    --check               exit 0 when every baseline answers (the image's HEALTHCHECK)
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import yaml

POLL = 5.0  # seconds between looks at the baselines and sandboxd
WATCH_MISSES = 6  # consecutive unanswered /healthz probes before giving up
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL, as sandboxd's default
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Baseline(NamedTuple):
    service: str
    argv: list[str]
    env: dict[str, str]
    port: int
    health: str | None


def plan(catalog: Path, *, router_host: str, environ: Mapping[str, str]) -> list[Baseline]:
    """The catalog's baselines that have a command. The catalog is trusted: sandboxd validates
    the same file strictly and refuses to start on a bad one."""
    services = (yaml.safe_load(catalog.read_text()) or {}).get("services") or []
    urls = {
        service_url_env(s["name"]): f"http://{router_host}:{s['routerPort']}"
        for s in services
        if s.get("routerPort") is not None
    }
    inherited = {k: v for k, v in environ.items() if not k.startswith("SANDBOXD_")}
    plans = []
    for service in services:
        baseline = service["baseline"]
        if baseline.get("command") is None:
            continue
        port = urlsplit(baseline["url"]).port or 80
        own = {str(k): str(v) for k, v in (baseline.get("env") or {}).items()}
        env = inherited | own | {"SANDBOXD_SANDBOX": ""} | urls | {"PORT": str(port)}
        argv = expand(baseline["command"], env)
        plans.append(Baseline(service["name"], argv, env, port, baseline.get("health")))
    return plans


def service_url_env(service: str) -> str:
    return f"SANDBOXD_SERVICE_{service.upper().replace('-', '_')}_URL"


def expand(argv: Iterable[str], env: Mapping[str, str]) -> list[str]:
    """`${VAR}` from the process env; unknown variables stay as written (as sandboxd does)."""
    return [_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), str(arg)) for arg in argv]


def answers(baseline: Baseline) -> bool:
    """Ready as sandboxd judges it: the health path answers < 400, else the port accepts."""
    if baseline.health is None:
        try:
            socket.create_connection(("127.0.0.1", baseline.port), timeout=3).close()
        except OSError:
            return False
        return True
    return _get(f"http://127.0.0.1:{baseline.port}{baseline.health}")


def _get(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3):  # noqa: S310 (http URLs built here)
            return True
    except OSError:  # URLError and HTTPError (>= 400) included
        return False


def run(plans: list[Baseline], *, workdir: Path, watch_url: str | None) -> int:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for p in plans:
            # Own session: stopping a baseline stops whatever it started too.
            procs[p.service] = subprocess.Popen(
                p.argv, env=p.env, cwd=workdir, start_new_session=True
            )
            print(f"baseline: {p.service} started on port {p.port}", flush=True)
        misses = 0
        while True:
            for service, proc in procs.items():
                if proc.poll() is not None:
                    print(f"baseline: {service} exited ({proc.returncode})", file=sys.stderr)
                    return 1
            if watch_url is not None:
                misses = 0 if _get(watch_url) else misses + 1
                if misses >= WATCH_MISSES:
                    print(f"baseline: {watch_url} does not answer; exiting", file=sys.stderr)
                    return 1
            time.sleep(POLL)
    finally:
        stop(procs.values())


def stop(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second stop request changes nothing
        signal.signal(sig, signal.SIG_IGN)
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for proc in running:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _stop_requested(_signum: int, _frame: object) -> None:
    raise SystemExit(0)  # unwinds into run()'s `finally`, which stops the baselines


def main(args: list[str]) -> int:
    catalog = os.environ.get("SANDBOXD_CATALOG")
    if not catalog:
        print("baseline: set SANDBOXD_CATALOG to a catalog file", file=sys.stderr)
        return 2
    path = Path(catalog).resolve()
    router_host = os.environ.get("SANDBOXD_ROUTER_HOST", "127.0.0.1")
    plans = plan(path, router_host=router_host, environ=os.environ)
    if args == ["--check"]:
        return 0 if all(answers(p) for p in plans) else 1
    if not plans:
        print(f"baseline: {path}: no service has a baseline command", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop_requested)
    signal.signal(signal.SIGINT, _stop_requested)
    return run(plans, workdir=path.parent, watch_url=os.environ.get("SANDBOXD_WATCH_URL"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
