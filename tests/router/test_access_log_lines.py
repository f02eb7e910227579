"""The access log's fast lines (`AccessLogSink.encode`: cached middles, no dict, no round()) are
orjson's encoding of `accesslog.line()` byte for byte, whatever a client put in the names and
the traceparent; and `thousandths` rounds exactly as `round(x, 3)` does."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from random import Random
from typing import Any

import orjson
import pytest

from sandboxd_router.record import Recorder
from sandboxd_router.telemetry import accesslog
from sandboxd_router.telemetry.accesslog import AccessLogSink
from sandboxd_router.telemetry.observed import BASELINE, HTTP_5XX, OK, SANDBOX, Fault, Observed
from sandboxd_router.telemetry.ring import RingReader
from sandboxd_router.telemetry.thousandths import round3, text3

T0 = 1_765_000_000.0
TRACEPARENTS = [
    None,
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # 3 fields: no trace id
    'x-a"b\\c-d-e',  # a quote and a backslash in the trace id
    "00-\x01\x1f-y-z",  # control characters
    "00-\ufffd\ufffd-y-z",  # what the ring makes of non-ASCII bytes
    "--a-",  # an empty trace id
    "nodash",
]
NAMES = ["web", "pr-1", 'q"uote', "back\\slash", "tab\there", "é-ünïcode", "(other)", "?", ""]


def observed(rng: Random) -> Observed:
    sandbox = rng.choice(NAMES)
    faults = rng.choice([(), (), (Fault("latency", "slow"),), (Fault("a", 'x"y'), Fault("b", ""))])
    values: dict[str, Any] = {
        "end": T0 + rng.random() * 1000,
        "duration": rng.choice([rng.random() / 100, rng.random() * 30, 0.0, 0.0005, 2.5e-7]),
        "service": rng.choice([*NAMES[:6], "-"]),
        "sandbox": sandbox,
        "routing_key": "k",
        "route": rng.choice([SANDBOX, BASELINE]),
        "method": rng.choice(["GET", "POST", "get", 'M"X']),
        "status": rng.choice([200, 404, 502, 0]),
        "bytes_in": rng.randrange(0, 1 << 40),
        "bytes_out": rng.randrange(0, 1 << 20),
        "traceparent": rng.choice(TRACEPARENTS),
        "error": rng.choice([OK, HTTP_5XX]),
        "injected": bool(faults),
        "faults": faults,
    }
    return Observed(**values)


def expected(batch: list[Observed]) -> bytes:
    """What the sink wrote before it had a fast path: orjson on the documented dict."""
    return b"".join(
        orjson.dumps(accesslog.line(o), option=orjson.OPT_APPEND_NEWLINE) for o in batch
    )


def written(tmp_path: Path, batch: list[Observed], *, one_by_one: bool) -> bytes:
    path = tmp_path / f"access-{one_by_one}.log"
    sink = AccessLogSink(str(path))
    if one_by_one:
        for o in batch:
            sink.add(o)
    else:
        sink.add_all(batch)
    asyncio.run(sink.close())  # (flushes)
    return path.read_bytes()


@pytest.mark.parametrize("one_by_one", [True, False])
def test_lines_are_byte_for_byte_those_of_the_documented_format(
    tmp_path: Path, one_by_one: bool
) -> None:
    batch = [observed(Random(seed)) for seed in range(3000)]
    assert written(tmp_path, batch, one_by_one=one_by_one) == expected(batch)


RAW_TRACEPARENTS = [
    None,
    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    b"00-4bf92f3577b34da6a3ce929d0e0e47!6-00f067aa0ba902b7-01",  # no letter or digit in it
    b"00-4bf92f3577b34da6a3ce929d0e0e47\xc3\xa9-00f067aa0ba902b7-01",  # past ASCII
    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # 3 fields
    b"-0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # a dash first
    b'x-a"b\\c-d-e',
    b"00-\x01\x1f-y-z",
    b"--a-",
    b"nodash",
    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-and-more-past-55-bytes",
]


def test_lines_of_requests_read_off_the_ring_are_those_of_the_documented_format(
    tmp_path: Path,
) -> None:
    """The trace id cut out of the record's bytes, not out of the text of `traceparent`."""
    names_r, names_w = os.pipe()
    recorder = Recorder(1024)
    recorder.attach(names_w)
    reader = RingReader(recorder.fd, names_r, 0)
    for n, raw in enumerate(RAW_TRACEPARENTS * 3):
        recorder.write(time.perf_counter() - n / 1000, recorder.ids("web", "pr-1", "k"),
                       n % 2 == 0, b"GET", 200, n, 10 * n, raw, 0)  # fmt: skip
    batch = reader.read()
    assert len(batch) == 3 * len(RAW_TRACEPARENTS)
    assert written(tmp_path, batch, one_by_one=False) == expected(batch)
    reader.close()
    recorder.close()


def test_lines_of_records_that_share_their_names_show_their_own_status(
    tmp_path: Path,
) -> None:
    """Records read off a ring share their `Names` (service, sandbox, route, method); the
    line middles kept on it by status are each request's own, statuses coming and going."""
    names_r, names_w = os.pipe()
    recorder = Recorder(1024)
    recorder.attach(names_w)
    reader = RingReader(recorder.fd, names_r, 0)
    statuses = [200, 404, 200, 502, 0, 301, 200, 404, *range(100, 130)]
    for n in range(3 * len(statuses)):
        ids = recorder.ids("web", "pr-1", "k") if n % 4 else recorder.ids("api", "", "")
        recorder.write(time.perf_counter(), ids, n % 3 == 0, b"GET" if n % 5 else b"POST",
                       statuses[n % len(statuses)], n, n, RAW_TRACEPARENTS[1], 0)  # fmt: skip
    batch = reader.read()
    assert len({id(o.names) for o in batch}) < len({(id(o.names), o.status) for o in batch})
    assert written(tmp_path, batch, one_by_one=False) == expected(batch)
    reader.close()
    recorder.close()


def test_a_second_of_lines_is_not_held_whole(tmp_path: Path) -> None:
    """Past `FLUSH_LINES` the lines go to the file at once, not at the next tick."""
    path = tmp_path / "access.log"
    sink = AccessLogSink(str(path))
    batch = [observed(Random(seed)) for seed in range(3000)]
    lines = expected(batch)
    assert len(batch) > accesslog.FLUSH_LINES  # (the premise: 3,000 lines are more)
    sink.add_all(batch[:10])
    assert path.read_bytes() == b""  # a few lines wait for the tick
    sink.add_all(batch[10:])
    assert path.read_bytes() == lines  # (no tick, no close)
    asyncio.run(sink.close())
    assert path.read_bytes() == lines


def test_a_line_names_its_fields_in_the_documented_order() -> None:
    o = Observed(T0 + 1.5, 0.000412, "web", "pr-1", "k", SANDBOX, "GET", 200, 96, 1161,
                 "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", OK, False)  # fmt: skip
    assert AccessLogSink("-").encode(o) == (
        b'{"time":1765000001.5,"service":"web","route":"sandbox=pr-1","method":"GET",'
        b'"status":200,"ms":0.412,"bytesIn":96,"bytesOut":1161,'
        b'"traceId":"4bf92f3577b34da6a3ce929d0e0e4736"}\n'
    )


VALUES = [
    0.0, -0.0, 0.0005, 0.0015, 0.0025, 2.675, 1.0005, 1e-9, 0.4124999, 0.4125, 123.4565,
    T0 + 0.0005, T0 + 0.9995, -1.5, 5e9, 1e300, float("inf"), float("nan"),
]  # fmt: skip


def test_thousandths_round_as_round_does() -> None:
    rng = Random(13)
    near_halves = [(rng.randrange(10**9) + 0.5) / 1000 for _ in range(20_000)]  # ties, or close
    spread = [rng.random() * 10 ** rng.randrange(-4, 10) for _ in range(100_000)]
    for x in VALUES + near_halves + spread:
        rounded = round(x, 3)
        assert text3(x) == orjson.dumps(rounded).decode(), x
        assert repr(round3(x)) == repr(rounded), x
