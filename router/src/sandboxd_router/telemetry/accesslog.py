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
from librt.strings import BytesWriter

from sandboxd_router.telemetry.observed import SANDBOX, Names, Observed
from sandboxd_router.telemetry.thousandths import SUFFIX_BYTES, text3, thousandths

log = logging.getLogger("sandboxd_router.telemetry")
STATUSES: Final = 16  # a request's names' middles kept, by status, past the last one
NUMBERS: Final = 1 << 12  # the numbers (and durations in µs) below this: their text kept
_DASH: Final = 0x2D  # "-"
_QUOTE: Final = 0x22  # '"'
_ISALNUM: Final = bytes.isalnum
"""Bound once: a bytes method with no compiled form is looked up by name at each call."""
FLUSH_LINES: Final = 1 << 10
"""Lines written out as soon as this many wait (else at each tick, once a second): a second
of lines at 28,000 requests is ~5.6 MB, held, and kept by the allocator after."""


class AccessLogSink:
    """`target`: a file (appended to) or "-" for the router's stdout."""

    def __init__(self, target: str) -> None:
        self._stream: IO[bytes] = (
            sys.stdout.buffer if target == "-" else open(target, "ab", buffering=1 << 16)  # noqa: SIM115
        )
        self._out = BytesWriter()
        """The lines since the last flush, written piece by piece into one buffer (no bytes
        object a line), written out as one."""
        self._count = 0  # lines in `_out`
        self._second, self._second_text = -1, b""
        self._time_n, self._time_text = -1, b""
        self._numbers: list[bytes | None] = [None] * NUMBERS
        self._durations: list[bytes | None] = [None] * NUMBERS
        self._ins: list[bytes | None] = [None] * NUMBERS
        self._outs: list[bytes | None] = [None] * NUMBERS

    def add(self, observed: Observed) -> None:
        self._add(observed)
        self._count += 1

    def add_all(self, batch: list[Observed]) -> None:
        """`add` for each (one call for a batch: what the telemetry process's loop calls)."""
        for observed in batch:
            try:
                self._add(observed)
            except Exception:
                log.exception("the access log failed on a request")
        self._count += len(batch)
        if self._count >= FLUSH_LINES:
            self.flush()

    def encode(self, observed: Observed) -> bytes:
        """The line of `line()` as orjson writes it, byte for byte."""
        out, self._out = self._out, BytesWriter()
        try:
            self._add(observed)
            return self._out.getvalue()
        finally:
            self._out = out

    def _add(self, observed: Observed) -> None:
        """`encode`'s line, to those waiting: what repeats from one request to the next
        (service, route, method, status; the time to the ms; small numbers) is encoded once,
        a plain trace id is cut out of the record's bytes, and the pieces are copied into
        the lines' buffer one after the other (compiled: native writes, no object a line)."""
        o = observed
        out = self._out
        if o.faults:
            out.write(orjson.dumps(line(o), option=orjson.OPT_APPEND_NEWLINE))
            return
        out.write(self._time(o.end))
        out.write(self._middle(o))
        out.write(self._ms(o.duration * 1000.0))  # (and `,"bytesIn":`)
        out.write(self._labelled(self._ins, o.bytes_in, b',"bytesOut":'))
        out.write(self._labelled(self._outs, o.bytes_out, b',"traceId":'))
        trace = _plain_trace(o.tp_bytes, o.tp_at, o.tp_len) if o.tp_len else None
        if trace is None:
            out.write(_odd_trace(o))
            out.write(b"}\n")
        else:
            out.append(_QUOTE)
            out.write(trace)
            out.write(b'"}\n')

    def _time(self, end: float) -> bytes:
        """`{"time":` and `text3(end)`, made once a millisecond (the requests of a read end
        in order, dozens a millisecond under load)."""
        n = thousandths(end)
        if n < 0:
            return b'{"time":' + text3(end).encode()
        if n != self._time_n:
            second = n // 1000
            if second != self._second:
                self._second, self._second_text = second, b'{"time":' + str(second).encode()
            self._time_n = n
            self._time_text = self._second_text + SUFFIX_BYTES[n % 1000]
        return self._time_text

    def _ms(self, ms: float) -> bytes:
        """`,"ms":`, `text3(ms)` and `,"bytesIn":`, kept for the durations under `NUMBERS` µs
        (the fewer pieces a line is written in, the fewer calls)."""
        n = thousandths(ms)
        if not 0 <= n < NUMBERS:
            return b',"ms":' + text3(ms).encode() + b',"bytesIn":'
        text = self._durations[n]
        if text is None:
            text = b',"ms":' + self._number(n // 1000) + SUFFIX_BYTES[n % 1000] + b',"bytesIn":'
            self._durations[n] = text
        return text

    def _labelled(self, texts: list[bytes | None], n: int, label: bytes) -> bytes:
        """`str(n)` and the next field's label, kept in `texts` for the small numbers."""
        if not 0 <= n < NUMBERS:
            return str(n).encode() + label
        text = texts[n]
        if text is None:
            text = texts[n] = str(n).encode() + label
        return text

    def _number(self, n: int) -> bytes:
        """`str(n)`, kept for the small numbers (sizes, milliseconds' integer parts)."""
        if not 0 <= n < NUMBERS:
            return str(n).encode()
        text = self._numbers[n]
        if text is None:
            text = self._numbers[n] = str(n).encode()
        return text

    def _middle(self, o: Observed) -> bytes:
        """The line from service to the status: the last one of the request's names
        (`Observed.names`, shared by the requests decoded alike) when the status is the same."""
        names = o.names
        if names.middle_status == o.status:
            return names.middle
        return _other_middle(names, o)

    async def tick(self) -> None:
        self.flush()

    async def close(self) -> None:
        self.flush()
        if self._stream is not sys.stdout.buffer:
            self._stream.close()

    def flush(self) -> None:
        out = self._out
        if len(out):
            self._stream.write(out.getvalue())
            self._stream.flush()
            out.truncate(0)
        self._count = 0


def _other_middle(names: Names, o: Observed) -> bytes:
    """The middle of a status other than the names' last: made, or kept from before when the
    names have had several (most have one: they keep no table then)."""
    status = o.status
    middles = names.middles
    text = middles.get(status) if middles is not None else None
    if text is None:
        fields = {"service": o.service, "route": _route(o), "method": o.method}
        text = b"," + orjson.dumps(fields)[1:-1] + b',"status":' + str(status).encode()
        if names.middle_status >= 0:  # a second status: each one's kept from now on
            if middles is None:
                middles = names.middles = {names.middle_status: names.middle}
            elif len(middles) >= STATUSES:
                middles.clear()
            middles[status] = text
    names.middle_status, names.middle = status, text
    return text


class RecordsSink(AccessLogSink):
    """Every field of each `Observed`, one JSON object a line."""

    def _add(self, observed: Observed) -> None:
        self._out.write((json.dumps(observed.fields()) + "\n").encode())


def line(observed: Observed) -> dict[str, object]:
    tp = observed.traceparent
    entry: dict[str, object] = {
        "time": round(observed.end, 3),
        "service": observed.service,
        "route": _route(observed),
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


def _route(o: Observed) -> str:
    """The `sandboxd-route` header's value."""
    return f"sandbox={o.sandbox}" if o.route == SANDBOX else "baseline"


def _odd_trace(o: Observed) -> bytes:
    """The `traceId` of a line whose trace id is not plain (`_plain_trace`), as JSON."""
    tp = o.traceparent
    if tp is None:
        return b"null"
    plain = _plain_trace_id(tp)
    return orjson.dumps(plain if plain is not None else _trace_id(tp))


def _plain_trace_id(tp: str) -> str | None:
    """`_trace_id` of a traceparent of the usual shape (three dashes where version 00 has
    them) when it needs no JSON escape (letters and digits only); else None."""
    if len(tp) < 53 or tp[2] != "-" or tp[35] != "-" or tp[52] != "-":
        return None
    if tp[0] == "-" or tp[1] == "-":
        return None
    trace = tp[3:35]
    return trace if trace.isalnum() else None  # (so no dash in it either)


def _plain_trace(raw: bytes, at: int, length: int) -> bytes | None:
    """`_plain_trace_id` of a traceparent's `length` bytes at `at` in `raw`, as bytes (a byte
    past ASCII: None, as the U+FFFD it reads as is no letter)."""
    if length < 53 or raw[at + 2] != _DASH or raw[at + 35] != _DASH or raw[at + 52] != _DASH:
        return None
    if raw[at] == _DASH or raw[at + 1] == _DASH:
        return None
    trace = raw[at + 3 : at + 35]
    return trace if _ISALNUM(trace) else None  # (ASCII letters and digits only)


def _trace_id(traceparent: str) -> str | None:
    """The second field of a `traceparent` (as received: not validated, only cut out)."""
    first = traceparent.find("-")
    second = traceparent.find("-", first + 1) if first >= 0 else -1
    if second < 0 or traceparent.find("-", second + 1) < 0:
        return None
    return traceparent[first + 1 : second]
