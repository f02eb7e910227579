"""The access log: one JSON line per request, written in batches off the request path.

Never a body, never a token: only time, service, route decision, method, status, duration,
bytes and the trace id from `traceparent`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import IO


class AccessLog:
    def __init__(self, target: str) -> None:
        self._enabled = target != "off"
        self._stream: IO[str] | None = None
        if target == "-":
            self._stream = sys.stdout
        elif self._enabled:
            self._stream = open(target, "a", buffering=1 << 16)  # noqa: SIM115 (closed in close())
        self._lines: list[str] = []
        self._flusher: asyncio.TimerHandle | None = None

    @property
    def enabled(self) -> bool:
        return self._enabled

    def record(
        self,
        *,
        service: str,
        route: bytes,
        method: bytes,
        status: int,
        started: float,
        bytes_in: int,
        bytes_out: int,
        traceparent: bytes | None,
        fault: str | None = None,
    ) -> None:
        """`fault`: the faults applied (`kind; id=…`, comma-separated), named in the line."""
        if not self._enabled:
            return
        trace = (
            traceparent.split(b"-")[1].decode("ascii", "replace")
            if traceparent and traceparent.count(b"-") >= 3
            else None
        )
        entry = {
            "time": round(time.time(), 3),
            "service": service,
            "route": route.decode("ascii", "replace"),
            "method": method.decode("ascii", "replace"),
            "status": status,
            "ms": round((time.perf_counter() - started) * 1000, 3),
            "bytesIn": bytes_in,
            "bytesOut": bytes_out,
            "traceId": trace,
        }
        if fault is not None:
            entry["fault"] = fault
        self._lines.append(json.dumps(entry, separators=(",", ":")))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().call_later(0.2, self.flush)

    def flush(self) -> None:
        self._flusher = None
        if self._lines and self._stream is not None:
            self._stream.write("\n".join(self._lines) + "\n")
            self._stream.flush()
        self._lines.clear()

    def close(self) -> None:
        self.flush()
        if self._stream is not None and self._stream is not sys.stdout:
            self._stream.close()
