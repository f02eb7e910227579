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
NUMBERS: Final = 1 << 12  # the numbers (and durations in µs) below this: their text kept
_DASH: Final = 0x2D  # "-"
FLUSH_BYTES: Final = 1 << 18
"""Lines written out as soon as this many characters wait (else at each tick, once a second):
a second of lines at 28,000 requests is ~5.6 MB, held, and kept by the allocator after."""


class Middle:
    """A line's middle (`AccessLogSink._middle`) and what it shows besides the sandbox and the
    service."""

    __slots__ = ("method", "route", "status", "text")

    def __init__(self, route: str, method: str, status: int, text: str) -> None:
        self.route = route
        self.method = method
        self.status = status
        self.text = text

    def shows(self, o: Observed) -> bool:
        return self.status == o.status and self.method == o.method and self.route == o.route


class AccessLogSink:
    """`target`: a file (appended to) or "-" for the router's stdout."""

    def __init__(self, target: str) -> None:
        self._stream: IO[bytes] = (
            sys.stdout.buffer if target == "-" else open(target, "ab", buffering=1 << 16)  # noqa: SIM115
        )
        self._lines: list[str] = []
        """The lines since the last flush, joined and encoded once when they are written out
        (a line encoded and appended to a buffer on its own cost ~400 instructions more)."""
        self._size = 0  # their characters
        self._second, self._second_text = -1, ""
        self._time_n, self._time_text = -1, ""
        self._middles: dict[tuple[str, str, str, str, int], str] = {}
        """(Service, sandbox, route, method, status) → the line's text from service to
        `"ms":`, the status included (an int written as text costs as much as the lookup)."""
        self._recent: dict[str, dict[str, Middle]] = {}
        """Sandbox → service → its last middle."""
        self._numbers: list[str | None] = [None] * NUMBERS
        self._durations: list[str | None] = [None] * NUMBERS

    def add(self, observed: Observed) -> None:
        self._keep(self.text(observed))

    def add_all(self, batch: list[Observed]) -> None:
        """`add` for each (one call for a batch: what the telemetry process's loop calls)."""
        for observed in batch:
            try:
                self._keep(self.text(observed))
            except Exception:
                log.exception("the access log failed on a request")
        if self._size >= FLUSH_BYTES:
            self.flush()

    def _keep(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line)

    def encode(self, observed: Observed) -> bytes:
        """The line of `line()` as orjson writes it, byte for byte."""
        return self.text(observed).encode()

    def text(self, observed: Observed) -> str:
        """`encode` as text, made without the dict: what repeats from one request to the next
        (service, route, method, status; the time to the ms) is encoded once."""
        o = observed
        if o.faults:
            return orjson.dumps(line(o), option=orjson.OPT_APPEND_NEWLINE).decode()
        raw = o.raw_traceparent
        if raw:
            trace = _plain_trace(raw)
        else:
            tp = o.traceparent
            trace = _plain_trace_id(tp) if tp else None
        time, middle = self._time(o.end), self._middle(o)
        ms, sizes = self._ms(o.duration * 1000.0), self._number(o.bytes_in)
        out = self._number(o.bytes_out)
        if trace is not None:
            return f'{time}{middle}{ms},"bytesIn":{sizes},"bytesOut":{out},"traceId":"{trace}"}}\n'
        tp = o.traceparent
        odd = orjson.dumps(_trace_id(tp) if tp else None).decode()
        return f'{time}{middle}{ms},"bytesIn":{sizes},"bytesOut":{out},"traceId":{odd}}}\n'

    def _time(self, end: float) -> str:
        """`{"time":` and `text3(end)`, made once a millisecond (the requests of a read end
        in order, dozens a millisecond under load)."""
        n = thousandths(end)
        if n < 0:
            return '{"time":' + text3(end)
        if n != self._time_n:
            second = n // 1000
            if second != self._second:
                self._second, self._second_text = second, str(second)
            self._time_n = n
            self._time_text = '{"time":' + self._second_text + SUFFIXES[n % 1000]
        return self._time_text

    def _ms(self, ms: float) -> str:
        """`text3(ms)`, kept for the durations under `NUMBERS` µs."""
        n = thousandths(ms)
        if not 0 <= n < NUMBERS:
            return text3(ms)
        text = self._durations[n]
        if text is None:
            text = self._durations[n] = self._number(n // 1000) + SUFFIXES[n % 1000]
        return text

    def _number(self, n: int) -> str:
        """`str(n)`, kept for the small numbers (sizes, milliseconds' integer parts)."""
        if not 0 <= n < NUMBERS:
            return str(n)
        text = self._numbers[n]
        if text is None:
            text = self._numbers[n] = str(n)
        return text

    def _middle(self, o: Observed) -> str:
        """The line from service to `"ms":`: the last one of the request's sandbox and service
        when it fits (two lookups of strings that keep their hashes), else by all it shows."""
        services = self._recent.get(o.sandbox)
        if services is None:
            if len(self._recent) >= MIDDLES:  # (sandboxes come and go: start afresh, rarely)
                self._recent.clear()
            services = self._recent[o.sandbox] = {}
        last = services.get(o.service)
        if last is None or not last.shows(o):
            last = services[o.service] = Middle(o.route, o.method, o.status, self._made(o))
        return last.text

    def _made(self, o: Observed) -> str:
        group = (o.service, o.sandbox, o.route, o.method, o.status)
        middle = self._middles.get(group)
        if middle is not None:
            return middle
        entry = line(o)
        fields = {"service": entry["service"], "route": entry["route"], "method": entry["method"]}
        middle = "," + orjson.dumps(fields).decode()[1:-1] + f',"status":{o.status},"ms":'
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
        if self._lines:
            self._stream.write("".join(self._lines).encode())
            self._stream.flush()
            self._lines.clear()
            self._size = 0


class RecordsSink(AccessLogSink):
    """Every field of each `Observed`, one JSON object a line."""

    def text(self, observed: Observed) -> str:
        return json.dumps(observed.fields()) + "\n"


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


def _plain_trace(raw: bytes) -> str | None:
    """`_plain_trace_id` of a traceparent's bytes (a byte past ASCII: None, as the U+FFFD it
    reads as is no letter)."""
    if len(raw) < 53 or raw[2] != _DASH or raw[35] != _DASH or raw[52] != _DASH:
        return None
    if raw[0] == _DASH or raw[1] == _DASH:
        return None
    try:
        trace = raw[3:35].decode("ascii")
    except UnicodeDecodeError:
        return None
    return trace if trace.isalnum() else None  # (str's: a C call where bytes' is a method's)


def _trace_id(traceparent: str) -> str | None:
    """The second field of a `traceparent` (as received: not validated, only cut out)."""
    first = traceparent.find("-")
    second = traceparent.find("-", first + 1) if first >= 0 else -1
    if second < 0 or traceparent.find("-", second + 1) < 0:
        return None
    return traceparent[first + 1 : second]
