"""The telemetry process, watched by the router (`sandboxd_router.child`): forked by the router
as it starts, `python -m sandboxd_router.telemetry` when started again. It reads the request
path's ring when the router wakes it (on the names pipe, each time half the ring was written)
or `POLL` seconds after its last read, hands each request to every sink, ticks them every
`TICK`, and on SIGTERM or the end of the names pipe (the router closed it: it is stopping)
reads what is left, closes the sinks and exits.

Started with `-m`, its settings come on an inherited pipe (`--config-fd`, one JSON object),
not in argv or the environment: the router's token is among them, and other processes can
read those.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from sandboxd_router.hardening import no_dumps, trim_heap
from sandboxd_router.telemetry import otlp
from sandboxd_router.telemetry.accesslog import AccessLogSink, RecordsSink
from sandboxd_router.telemetry.observed import Sink
from sandboxd_router.telemetry.prometheus import PrometheusSink, serve
from sandboxd_router.telemetry.ring import BATCH, RingReader
from sandboxd_router.telemetry.signals import SignalsSink

log = logging.getLogger("sandboxd_router.telemetry")
POLL = 0.25
"""At most this long between reads with no wake-up: an access log line's delay at low traffic.
Under load the router's wake-ups come first (each half ring: ~10 a second at 40,000 requests a
second, where a 50 ms poll read 20 times): the telemetry process's CPU a request went from
0.9-1.0 to 0.7-0.8 µs (`benchmarks/signals_perf.py`, three runs)."""
TICK = 1.0
CLOSE_TIMEOUT = 10.0  # for all the sinks' last flush together


@dataclass(frozen=True)
class Config:
    access_log: str = "off"
    """A file, "-" for stdout (the router's), or "off"."""
    control_url: str | None = None
    token: str | None = None
    record_file: str | None = None
    """Every record's fields, a JSON line each (for tests and debugging)."""
    start: int = 0
    """The first record to read (the ring's `done` when this process was started)."""
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    """Prometheus metrics (`GET /metrics`) on this port; None: not served."""
    trace_baseline: float = 0.0
    """The fraction of requests without a sandbox's key exported as spans (OTLP only)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sandboxd_router.telemetry")
    p.add_argument("--ring-fd", type=int, required=True)
    p.add_argument("--names-fd", type=int, required=True)
    p.add_argument("--config-fd", type=int, required=True)
    p.add_argument("--log-level", default="info")
    return p.parse_args(argv)


def read_config(fd: int) -> Config:
    with os.fdopen(fd, "rb") as stream:
        return config_of(json.loads(stream.read()))


def config_of(raw: dict[str, Any]) -> Config:
    """The settings the router sends (`TelemetryProcess.settings`)."""
    return Config(
        access_log=str(raw.get("accessLog", "off")),
        control_url=raw.get("controlUrl"),
        token=raw.get("token"),
        record_file=raw.get("recordFile"),
        start=int(raw.get("start", 0)),
        metrics_host=str(raw.get("metricsHost") or "127.0.0.1"),
        metrics_port=raw.get("metricsPort"),
        trace_baseline=float(raw.get("traceBaseline") or 0.0),
    )


def build_sinks(config: Config) -> list[Sink]:
    """The sinks this process feeds, from its settings."""
    sinks: list[Sink] = []
    if config.access_log != "off":
        sinks.append(AccessLogSink(config.access_log))
    if config.record_file:
        sinks.append(RecordsSink(config.record_file))
    if config.control_url and config.token:
        sinks.append(SignalsSink(url=config.control_url, token=config.token))
    if config.metrics_port is not None:
        sinks.append(PrometheusSink())
    export = otlp.from_env()
    if export is not None:
        sinks.append(otlp.SpanSink(export, baseline=config.trace_baseline))
        log.info("spans go to an OTLP endpoint (OTEL_* variables)")
    return sinks


async def run(reader: RingReader, sinks: list[Sink], config: Config | None = None) -> None:
    server = None
    for sink in sinks:
        if isinstance(sink, PrometheusSink) and config and config.metrics_port is not None:
            server = await serve(sink, config.metrics_host, config.metrics_port)
    stop = asyncio.Event()
    woken = asyncio.Event()  # by the router (the names pipe is readable), or to stop
    loop = asyncio.get_running_loop()

    def stopping() -> None:
        stop.set()
        woken.set()

    loop.add_signal_handler(signal.SIGTERM, stopping)
    loop.add_reader(reader.names_fd, woken.set)
    # Ctrl-C reaches the whole process group: the router stops, then closes the names pipe
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    ticked = time.monotonic()
    lost = 0
    while not (stop.is_set() or reader.eof):
        full = _feed(reader, sinks)
        if time.monotonic() - ticked >= TICK:
            ticked = time.monotonic()
            lost = _report_lost(reader, lost)
            for sink in sinks:
                if isinstance(sink, PrometheusSink):
                    sink.lost = lost
            await _tick(sinks)
            trim_heap()  # (what a second's lines, posts and batches used, freed)
        if not full:
            woken.clear()
            wait = min(POLL, max(0.0, ticked + TICK - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), wait)
    loop.remove_reader(reader.names_fd)
    while _feed(reader, sinks) or reader.position < reader.done():
        pass  # the rest of the ring, up to what the router wrote before it stopped
    _report_lost(reader, lost)
    if server is not None:
        server.close()
    try:
        await asyncio.wait_for(_close(sinks), CLOSE_TIMEOUT)
    except TimeoutError:
        log.warning("the telemetry sinks did not close within %s s", CLOSE_TIMEOUT)


def _feed(reader: RingReader, sinks: list[Sink]) -> bool:
    """One read of the ring; True when it was a full batch (more may be waiting)."""
    batch = reader.read()
    for sink in sinks:
        add_all = getattr(sink, "add_all", None)  # a whole batch in one call (`BatchSink`)
        if add_all is not None:
            try:
                add_all(batch)
            except Exception:  # (they catch what fails on a request: this is a bug of theirs)
                log.exception("a telemetry sink failed on a batch")
            continue
        for observed in batch:
            try:
                sink.add(observed)
            except Exception:
                log.exception("a telemetry sink failed on a request")
    for sandbox, key in reader.gone():
        for sink in sinks:
            if isinstance(sink, PrometheusSink):
                sink.forget(sandbox, key)
    return len(batch) >= BATCH


async def _tick(sinks: list[Sink]) -> None:
    for sink in sinks:
        try:
            await sink.tick()
        except Exception:
            log.exception("a telemetry sink failed")


async def _close(sinks: list[Sink]) -> None:
    for sink in sinks:
        try:
            await sink.close()
        except Exception:
            log.exception("a telemetry sink failed to close")


def _report_lost(reader: RingReader, reported: int) -> int:
    if reader.lost > reported:
        log.warning(
            "%d request records lost: the telemetry process fell behind the ring (%d in all)",
            reader.lost - reported,
            reader.lost,
        )
    return reader.lost


def main(argv: list[str] | None = None) -> int:
    no_dumps()  # the token is about to enter this process's memory
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    serve_ring(args.ring_fd, args.names_fd, read_config(args.config_fd))
    return 0


def serve_settings(ring_fd: int, names_fd: int, settings: dict[str, Any]) -> None:
    """The telemetry process forked by the router (`TelemetryProcess.fork`)."""
    serve_ring(ring_fd, names_fd, config_of(settings))


def serve_ring(ring_fd: int, names_fd: int, config: Config) -> None:
    """Until the router stops."""
    # A request's objects die young and form no cycles; the cyclic collector's full passes over
    # the records waiting to be reported cost more than all the rest: rarely, then.
    gc.set_threshold(50_000, 50, 100)
    reader = RingReader(ring_fd, names_fd, config.start)
    asyncio.run(run(reader, build_sinks(config), config))


if __name__ == "__main__":
    sys.exit(main())
