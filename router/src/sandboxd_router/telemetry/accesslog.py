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

from sandboxd_router.telemetry.observed import SANDBOX, Observed


class AccessLogSink:
    """`target`: a file (appended to) or "-" for the router's stdout."""

    def __init__(self, target: str) -> None:
        self._stream: IO[str] = (
            sys.stdout if target == "-" else open(target, "a", buffering=1 << 16)  # noqa: SIM115
        )
        self._lines: list[str] = []

    def add(self, observed: Observed) -> None:
        self._lines.append(json.dumps(self.line(observed), separators=(",", ":")))

    def line(self, observed: Observed) -> dict[str, object]:
        return line(observed)

    async def tick(self) -> None:
        self.flush()

    async def close(self) -> None:
        self.flush()
        if self._stream is not sys.stdout:
            self._stream.close()

    def flush(self) -> None:
        if self._lines:
            self._stream.write("\n".join(self._lines) + "\n")
            self._stream.flush()
            self._lines.clear()


class RecordsSink(AccessLogSink):
    """Every field of each `Observed`, one JSON object a line."""

    def line(self, observed: Observed) -> dict[str, object]:
        return dataclasses.asdict(observed)


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
        "traceId": tp.split("-")[1] if tp and tp.count("-") >= 3 else None,
    }
    if observed.faults:
        entry["fault"] = ", ".join(f"{f.kind}; id={f.id}" for f in observed.faults)
    return entry
