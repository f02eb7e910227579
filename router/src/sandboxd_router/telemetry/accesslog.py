"""The access log: one JSON line per request, written by the telemetry process.

Never a body, never a token: only time, service, route decision, method, status, duration,
bytes, the trace id from `traceparent` and the faults applied. The line's format is the one
the router wrote itself before issue 13 (`route` is the `sandboxd-route` header's value).

`RecordsSink` writes every field of every record instead (the router's hidden
`--record-file`): for tests and debugging.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import IO, Final

import orjson

from sandboxd_router.telemetry.observed import SANDBOX, Observed
from sandboxd_router.telemetry.thousandths import SUFFIXES, text3, thousandths

log = logging.getLogger("sandboxd_router.telemetry")
MIDDLES: Final = 100_000  # lines' middles kept (a few per live sandbox and service)
FLUSH_BYTES: Final = 1 << 18
"""Lines written out as soon as this many wait (else at each tick, once a second): a second of
lines at 28,000 requests is ~5.6 MB of buffer, held, and kept by the allocator after."""


class AccessLogSink:
    """`target`: a file (appended to) or "-" for the router's stdout."""

    def __init__(self, target: str) -> None:
        self._stream: IO[bytes] = (
            sys.stdout.buffer if target == "-" else open(target, "ab", buffering=1 << 16)  # noqa: SIM115
        )
        self._buffer = bytearray()
        """The lines since the last flush, in one buffer: a list of a line object each held
        about 4 KB a line (a second at 60k requests: 235 MB), and cost twice the time."""
        self._second, self._second_text = -1, ""
        self._middles: dict[tuple[str, str, str, str, int], str] = {}
        """(Service, sandbox, route, method, status) → the line's text from service to status,
        the status included (an int written as text costs as much as the lookup)."""

    def add(self, observed: Observed) -> None:
        self._buffer += self.encode(observed)

    def add_all(self, batch: list[Observed]) -> None:
        """`add` for each (one call for a batch: what the telemetry process's loop calls)."""
        for observed in batch:
            try:
                self._buffer += self.encode(observed)
            except Exception:
                log.exception("the access log failed on a request")
        if len(self._buffer) >= FLUSH_BYTES:
            self.flush()

    def encode(self, observed: Observed) -> bytes:
        """The line of `line()` as orjson writes it, byte for byte, made without the dict:
        what repeats from one request to the next (service, route, method) is encoded once."""
        o = observed
        if o.faults:
            return orjson.dumps(line(o), option=orjson.OPT_APPEND_NEWLINE)
        group = (o.service, o.sandbox, o.route, o.method, o.status)
        middle = self._middles.get(group)
        if middle is None:
            middle = self._middle(o, group)
        tp = o.traceparent
        trace = _plain_trace_id(tp) if tp else None
        if trace is not None:
            return (
                f'{{"time":{self._time(o.end)}{middle},"ms":'
                f'{text3(o.duration * 1000)},"bytesIn":{o.bytes_in},'
                f'"bytesOut":{o.bytes_out},"traceId":"{trace}"}}\n'
            ).encode()
        odd = _trace_id(tp) if tp else None
        return (
            f'{{"time":{self._time(o.end)}{middle},"ms":'
            f'{text3(o.duration * 1000)},"bytesIn":{o.bytes_in},'
            f'"bytesOut":{o.bytes_out},"traceId":{orjson.dumps(odd).decode()}}}\n'
        ).encode()

    def _time(self, end: float) -> str:
        """`text3(end)`, the text of the whole seconds made once a second."""
        n = thousandths(end)
        if n < 0:
            return text3(end)
        second = n // 1000
        if second != self._second:
            self._second, self._second_text = second, str(second)
        return self._second_text + SUFFIXES[n % 1000]

    def _middle(self, o: Observed, group: tuple[str, str, str, str, int]) -> str:
        entry = line(o)
        fields = {"service": entry["service"], "route": entry["route"], "method": entry["method"]}
        middle = "," + orjson.dumps(fields).decode()[1:-1] + f',"status":{o.status}'
        if len(self._middles) >= MIDDLES:  # (sandboxes come and go: start afresh, rarely)
            self._middles.clear()
        self._middles[group] = middle
        return middle

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

    def encode(self, observed: Observed) -> bytes:
        return json.dumps(observed.fields()).encode() + b"\n"


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


def _plain_trace_id(tp: str) -> str | None:
    """`_trace_id` of a traceparent of the usual shape (three dashes where version 00 has
    them) when it needs no JSON escape (letters and digits only); else None."""
    if len(tp) < 53 or tp[2] != "-" or tp[35] != "-" or tp[52] != "-":
        return None
    if tp[0] == "-" or tp[1] == "-":
        return None
    trace = tp[3:35]
    return trace if trace.isalnum() else None  # (so no dash in it either)


def _trace_id(traceparent: str) -> str | None:
    """The second field of a `traceparent` (as received: not validated, only cut out)."""
    first = traceparent.find("-")
    second = traceparent.find("-", first + 1) if first >= 0 else -1
    if second < 0 or traceparent.find("-", second + 1) < 0:
        return None
    return traceparent[first + 1 : second]
