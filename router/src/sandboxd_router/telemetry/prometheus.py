"""The router's Prometheus metrics, kept and served by the telemetry process
(`--metrics-port`): what every request did, by sandbox and service.

    sandboxd_requests_total{sandbox, service, code}           counter (code "0": no response)
    sandboxd_request_duration_seconds{sandbox, service}       histogram, fine buckets from 0.1 ms
    sandboxd_faults_injected_total{sandbox, service, fault}   counter (fault: its id)
    sandboxd_mcp_tool_calls_total{sandbox, service, tool, outcome}   counter (ok or the error)
    sandboxd_telemetry_records_lost_total                     records the request path wrote
                                                              faster than they were read

`sandbox` is "" for requests that carried no live sandbox's key. A sandbox's series exist only
while it is live: `forget` (called when the route table drops it) removes them, so the number
of series stays bounded by the live sandboxes times services (times tools, themselves capped by the
request path's interning). Counters are per router process, as Prometheus expects: sum them
over the routers with `sum by (...)`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Iterator

from sandboxd_router.telemetry.buckets import HISTOGRAM_MS, bin_of
from sandboxd_router.telemetry.counters import Counters
from sandboxd_router.telemetry.observed import Observed

GONE = 10_000  # deleted sandboxes remembered
LE = [f"{ms / 1000:g}" for ms in HISTOGRAM_MS]
"""Seconds: the standard `http.server.request.duration` buckets start at 5 ms, too coarse for
a proxy whose requests take a fraction of a millisecond (these start at 0.1 ms)."""


class PrometheusSink:
    """A `Sink`: the counters (`counters.Counters`), rendered in the text exposition format."""

    def __init__(self) -> None:
        self.counters = Counters()
        self.lost = 0
        self._gone: OrderedDict[tuple[str, str], None] = OrderedDict()
        """(Sandbox, routing key) of the latest deleted sandboxes: a request that was in flight
        when its sandbox went must not bring its series back (a name used again has a new
        key)."""

    def add(self, observed: Observed) -> None:
        if observed.sandbox and (observed.sandbox, observed.routing_key) in self._gone:
            return
        self.counters.add(observed, bin_of(observed.duration * 1000.0))

    def forget(self, sandbox: str, key: str) -> None:
        """Drop a deleted sandbox's series."""
        self.counters.forget(sandbox)
        self._gone[(sandbox, key)] = None
        if len(self._gone) > GONE:
            self._gone.popitem(last=False)

    async def tick(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def render(self) -> bytes:
        return "".join(self._lines()).encode()

    def _lines(self) -> Iterator[str]:
        yield "# HELP sandboxd_requests_total Requests the router finished, by status code.\n"
        yield "# TYPE sandboxd_requests_total counter\n"
        c = self.counters
        for (sandbox, service, code), n in c.requests.items():
            yield f'sandboxd_requests_total{{{_labels(sandbox, service)},code="{code}"}} {n}\n'
        yield "# HELP sandboxd_request_duration_seconds Time from request to response end.\n"
        yield "# TYPE sandboxd_request_duration_seconds histogram\n"
        for (sandbox, service), h in c.durations.items():
            labels = _labels(sandbox, service)
            total = 0
            for le, n in zip([*LE, "+Inf"], h.counts, strict=True):
                total += n
                yield f'sandboxd_request_duration_seconds_bucket{{{labels},le="{le}"}} {total}\n'
            yield f"sandboxd_request_duration_seconds_sum{{{labels}}} {h.sum!r}\n"
            yield f"sandboxd_request_duration_seconds_count{{{labels}}} {total}\n"
        yield "# HELP sandboxd_faults_injected_total Requests a fault was applied to.\n"
        yield "# TYPE sandboxd_faults_injected_total counter\n"
        for (sandbox, service, fault), n in c.faults.items():
            labels = f'{_labels(sandbox, service)},fault="{_escape(fault)}"'
            yield f"sandboxd_faults_injected_total{{{labels}}} {n}\n"
        yield "# HELP sandboxd_mcp_tool_calls_total MCP tools/call requests by tool and outcome.\n"
        yield "# TYPE sandboxd_mcp_tool_calls_total counter\n"
        for (sandbox, service, tool, error), n in c.tools.items():
            outcome = error or "ok"
            labels = f'{_labels(sandbox, service)},tool="{_escape(tool)}",outcome="{outcome}"'
            yield f"sandboxd_mcp_tool_calls_total{{{labels}}} {n}\n"
        yield "# HELP sandboxd_telemetry_records_lost_total Records overwritten before read.\n"
        yield "# TYPE sandboxd_telemetry_records_lost_total counter\n"
        yield f"sandboxd_telemetry_records_lost_total {self.lost}\n"


def _labels(sandbox: str, service: str) -> str:
    return f'sandbox="{_escape(sandbox)}",service="{_escape(service)}"'


def _escape(value: str) -> str:
    """Label values as the text format wants them: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def serve(sink: PrometheusSink, host: str, port: int) -> asyncio.Server:
    """`GET /metrics` (and nothing else) on `host:port`: a tiny HTTP/1.1 server, one response
    per connection, so no framework runs in the telemetry process."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            line = head.split(b"\r\n", 1)[0].split(b" ")
            if len(line) == 3 and line[0] in (b"GET", b"HEAD") and line[1] == b"/metrics":
                body = sink.render()
                status, ctype = b"200 OK", b"text/plain; version=0.0.4; charset=utf-8"
            else:
                body = b'{"error": "not_found", "message": "only GET /metrics is served"}\n'
                status, ctype = b"404 Not Found", b"application/json"
            writer.write(
                b"HTTP/1.1 %b\r\nContent-Type: %b\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n" % (status, ctype, len(body))
            )
            if line[0] != b"HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that sent no whole head in time, or went away
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port, limit=16 * 1024)
