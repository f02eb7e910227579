"""The access log: one JSON line per request, written by the telemetry process.

Never a body, never a token: only time, service, route decision, method, status, duration,
bytes, the trace id from `traceparent` and the faults applied. The line's format is the one
the router wrote itself before issue 13 (`route` is the `sandboxd-route` header's value).

`RecordsSink` writes every field of every record instead (the router's hidden
`--record-file`): for tests and debugging.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import IO

import orjson

from sandboxd_router.telemetry.observed import SANDBOX, Observed


class AccessLogSink:
    """`target`: a file (appended to) or "-" for the router's stdout."""

    def __init__(self, target: str) -> None:
        self._stream: IO[bytes] = (
            sys.stdout.buffer if target == "-" else open(target, "ab", buffering=1 << 16)  # noqa: SIM115
        )
        self._buffer = bytearray()
        """The lines since the last flush, in one buffer: a list of a line object each held
        about 4 KB a line (a second at 60k requests: 235 MB), and cost twice the time."""

    def add(self, observed: Observed) -> None:
        self._buffer += orjson.dumps(self.line(observed), option=orjson.OPT_APPEND_NEWLINE)

    def line(self, observed: Observed) -> dict[str, object]:
        return line(observed)

    async def tick(self) -> None:
        self.flush()

    async def close(self) -> None:
        self.flush()
        if self._stream is not sys.stdout.buffer:
            self._stream.close()

    def flush(self) -> None:
        if self._buffer:
            self._stream.write(self._buffer)
            self._stream.flush()
            self._buffer.clear()


class RecordsSink(AccessLogSink):
    """Every field of each `Observed`, one JSON object a line."""

    def line(self, observed: Observed) -> dict[str, object]:
        return dataclasses.asdict(observed)

    def add(self, observed: Observed) -> None:
        self._buffer += json.dumps(self.line(observed)).encode() + b"\n"


def line(observed: Observed) -> dict[str, object]:
    tp = observed.traceparent
    entry: dict[str, object] = {
        "time": round(observed.end, 3),
        "service": observed.service,
        "route": f"sandbox={observed.sandbox}" if observed.route == SANDBOX else "baseline",
        "method": observed.method,
        "status": observed.status,
        "ms": round(observed.duration * 1000, 3),
        "bytesIn": observed.bytes_in,
        "bytesOut": observed.bytes_out,
        "traceId": _trace_id(tp) if tp else None,
    }
    if observed.faults:
        entry["fault"] = ", ".join(f"{f.kind}; id={f.id}" for f in observed.faults)
    return entry


def _trace_id(traceparent: str) -> str | None:
    """The second field of a `traceparent` (as received: not validated, only cut out)."""
    parts = traceparent.split("-", 3)
    return parts[1] if len(parts) == 4 else None
