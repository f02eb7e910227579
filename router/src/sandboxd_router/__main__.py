"""`sandboxd-router` (also `python -m sandboxd_router`): the baggage-routing proxy."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import uvloop

from sandboxd_router import native
from sandboxd_router.child import TelemetryProcess
from sandboxd_router.hardening import no_dumps
from sandboxd_router.record import DEFAULT_SLOTS, Recorder
from sandboxd_router.server import Router, serve_admin
from sandboxd_router.state import Limits, RouterState
from sandboxd_router.table import TableError

log = logging.getLogger("sandboxd_router")
STOP_WAIT = 2.0
"""Seconds the background tasks (long poll, reports, sweep) get to end once cancelled."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="sandboxd-router",
        description="Route each request to its sandbox's fork (by the W3C baggage routing key) "
        "or to the baseline.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--control-url",
        default=os.environ.get("SANDBOXD_URL"),
        help="sandboxd's URL, long-polled for routes (env SANDBOXD_URL)",
    )
    source.add_argument(
        "--routes-file", type=Path, help="a static route table (GET /v1/routes JSON)"
    )
    p.add_argument("--token", default=os.environ.get("SANDBOXD_TOKEN"),
                   help="bearer token for the control plane (env SANDBOXD_TOKEN)")  # fmt: skip
    p.add_argument("--token-file", type=Path,
                   help="read the token from this file, - for stdin (kept out of environ "
                        "and argv, which more processes can read)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument(
        "--gateway-port", type=int, help="one more listener that picks the service from Host"
    )
    p.add_argument("--admin-port", type=int, help="serve GET /healthz on this port")
    p.add_argument("--access-log", default="-", help="a file, - for stdout (default), or off")
    p.add_argument(
        "--record",
        choices=("on", "off"),
        default="on",
        help="record every request for the telemetry process (access log, signals; default "
        "on); off: no record, no telemetry process, no access log",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics (GET /metrics) by sandbox and service on this port "
        "(from the telemetry process; needs --record on)",
    )
    p.add_argument(
        "--trace-baseline",
        type=float,
        default=0.0,
        help="the fraction (0..1) of requests without a sandbox's key also exported as spans "
        "when OTEL_* names an OTLP endpoint (every sandbox's request is; default 0)",
    )
    # for tests and debugging: a smaller ring; every record's fields as JSON lines in a file
    p.add_argument("--record-slots", type=int, default=DEFAULT_SLOTS, help=argparse.SUPPRESS)
    p.add_argument("--record-file", help=argparse.SUPPRESS)
    p.add_argument(
        "--max-header-bytes", type=int, default=32 * 1024, help="431 above (default 32 KiB)"
    )
    p.add_argument("--upstream-timeout", type=float, default=60.0,
                   help="seconds to wait for a response head (504 after; default 60)")  # fmt: skip
    p.add_argument(
        "--head-timeout",
        type=float,
        default=30.0,
        help="seconds for a request head from its first byte (408 after; default 30)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds a request body may send nothing (408 after; default 30)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=10_000,
        help="client connections held at once; past it 503 and close (default 10000)",
    )
    p.add_argument(
        "--mcp-body-budget",
        type=int,
        default=16 << 20,
        help="bytes of MCP bodies held across connections to read their routing key; "
        "past it a body is routed without it (default 16 MiB)",
    )
    p.add_argument(
        "--busy-poll-us",
        type=float,
        default=50,
        help="microseconds to poll for an upstream's answer instead of sleeping: about 30 µs "
        "less per hop on a VM, for at most that much CPU per request (default 50; 0 turns it off)",
    )
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    if args.token_file is not None:
        args.token = read_token(args.token_file, p)
    if args.routes_file is None and not args.control_url:
        p.error("give --control-url (with --token) or --routes-file")
    if args.record == "on" and args.access_log not in ("-", "off"):
        try:  # (written by the telemetry process: an unwritable file is said now, not later)
            open(args.access_log, "a").close()
        except OSError as e:
            p.error(f"--access-log {args.access_log}: {e.strerror or e}")
    if args.metrics_port is not None and args.record == "off":
        p.error("--metrics-port needs --record on (the telemetry process serves the metrics)")
    if not 0 <= args.trace_baseline <= 1:
        p.error("--trace-baseline is a fraction from 0 to 1")
    if args.record_slots < 2:
        p.error("--record-slots must be at least 2")
    if args.control_url and not args.token:
        p.error("--control-url needs --token (or SANDBOXD_TOKEN)")
    return args


def read_token(path: Path, parser: argparse.ArgumentParser) -> str:
    try:
        if str(path) == "-":
            raw = sys.stdin.buffer.read(4096)
            _stdin_to_devnull()
        else:
            raw = path.read_bytes()[:4096]
    except OSError as e:
        parser.error(f"--token-file {path}: {e.strerror or e}")
    return raw.decode(errors="replace").strip()


def hide_token(token: str | None) -> None:
    """Overwrite the token where /proc shows this process's argv and environment (given as
    --token or SANDBOXD_TOKEN): the telemetry process is a fork, whose /proc shows the same
    memory, and must show no token (nor, then, does the router)."""
    if not token:
        return
    secret = token.encode()
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        arg_start, arg_end, env_start, env_end = (int(f) for f in fields[45:49])
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            for start, end in ((arg_start, arg_end), (env_start, env_end)):
                mem.seek(start)
                block = mem.read(end - start)
                if secret in block:
                    mem.seek(start)
                    mem.write(block.replace(secret, b"*" * len(secret)))
    except (OSError, ValueError) as e:  # (a kernel that forbids it: shown as in the router's)
        log.warning("cannot hide the token from /proc/%d/{cmdline,environ}: %s", os.getpid(), e)


def _stdin_to_devnull() -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def fork_telemetry(args: argparse.Namespace) -> TelemetryProcess | None:
    """The telemetry process (None with --record off), forked before the loop starts."""
    if args.record == "off":
        return None
    hide_token(args.token)
    telemetry = TelemetryProcess(
        Recorder(args.record_slots),
        access_log=args.access_log,
        control_url=args.control_url,
        token=args.token,
        record_file=args.record_file,
        log_level=args.log_level,
        metrics_host=args.host,
        metrics_port=args.metrics_port,
        trace_baseline=args.trace_baseline,
    )
    from sandboxd_router.telemetry.__main__ import serve_settings  # (not with --record off)

    telemetry.fork(serve_settings)
    return telemetry


async def run(args: argparse.Namespace, telemetry: TelemetryProcess | None) -> None:
    # (imported after the telemetry process is forked, which never uses them: their objects
    # then sit in pages of the router's alone, not in pages both processes share until one
    # writes there and so copies them)
    from sandboxd_router.report import Reporter
    from sandboxd_router.watch import load_file, watch_control_plane

    limits = Limits(
        max_header_bytes=args.max_header_bytes,
        upstream_timeout=args.upstream_timeout,
        busy_poll=args.busy_poll_us / 1e6,
        head_timeout=args.head_timeout,
        body_timeout=args.body_timeout,
        max_connections=args.max_connections,
        mcp_body_budget=args.mcp_body_budget,
    )
    recorder = telemetry.recorder if telemetry is not None else None
    state = RouterState(limits=limits, recorder=recorder)
    router = Router(
        state=state, host=args.host, gateway_port=args.gateway_port, telemetry=telemetry
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    admin = await serve_admin(router, args.host, args.admin_port) if args.admin_port else None
    background: list[asyncio.Task[None]] = [asyncio.create_task(router.sweep(), name="sweep")]
    reporter = None
    if args.routes_file is not None:
        await load_file(
            args.routes_file,
            upstreams=router.upstreams,
            on_table=router.apply,
            faults=router.faults,
        )
    else:
        watcher = watch_control_plane(
            url=args.control_url,
            token=args.token,
            upstreams=router.upstreams,
            on_table=router.apply,
            faults=router.faults,
        )
        reporter = Reporter(url=args.control_url, token=args.token, snapshot=router.faults.entries)
        background += [
            asyncio.create_task(watcher, name="route-table long poll"),
            asyncio.create_task(reporter.run(), name="fault reports"),
        ]
    await stop.wait()
    for task in background:
        task.cancel()
    _, stuck = await asyncio.wait(background, timeout=STOP_WAIT)
    if stuck:  # (a lost cancellation must not keep the router from stopping)
        names = ", ".join(t.get_name() for t in stuck)
        log.warning("%s still running %s s after the stop; stopping anyway", names, STOP_WAIT)
    if reporter is not None:
        await reporter.final()
    if admin is not None:
        admin.close()
    router.close()
    await router.stop_telemetry()


def main(argv: list[str] | None = None) -> int:
    no_dumps()
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    if native.mode == "compiled":
        log.info("hot path: compiled (mypyc)")
    else:
        log.warning("hot path: %s", native.mode)
    try:
        uvloop.run(run(args, fork_telemetry(args)))
    except TableError as e:
        print(f"sandboxd-router: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"sandboxd-router: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
