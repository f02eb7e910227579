"""The C writer of plain records (`_ringstore.c`) leaves the same bytes as the Python writer.

Two recorders get the same requests, one with the C store and one without (`store=False`);
their slots must match byte for byte but for the clock's two fields (each reads its own
clock), which must be consistent with `started`."""

from __future__ import annotations

import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandboxd_router import native, record
from sandboxd_router.faults import Fault
from sandboxd_router.record import Recorder
from tests.router.test_record_bytes import done
from tests.router.test_record_bytes import slot as slot_of

pytestmark = pytest.mark.skipif(
    native.mode != "compiled", reason="the C store is used by the compiled build only"
)

CLOCK = slice(8, 24)  # end, duration


def pair(slots: int = 8) -> tuple[Recorder, Recorder]:
    c, py = Recorder(slots), Recorder(slots, store=False)
    assert c._store is not None and py._store is None
    py._wall = c._wall  # (each read its own clocks: the same offset for both)
    return c, py


def same_but_the_clock(a: bytes, b: bytes, started: float, wall: float) -> None:
    assert a[: CLOCK.start] == b[: CLOCK.start] and a[CLOCK.stop :] == b[CLOCK.stop :]
    for raw in (a, b):
        end, duration = struct.unpack_from("<dd", raw, CLOCK.start)
        assert 0 <= duration < 60
        assert end - wall - duration == pytest.approx(started, abs=1e-6)


def test_the_compiled_build_writes_plain_records_in_c() -> None:
    recorder = Recorder(8)
    assert recorder._store is not None and recorder._plain is not None
    recorder.close()


@settings(max_examples=300, deadline=None)
@given(
    traceparent=st.none() | st.binary(max_size=300),
    target=st.binary(max_size=120),
    status=st.integers(0, 0xFFFF),
    error=st.integers(0, 4),
    forked=st.booleans(),
    bytes_in=st.integers(0, 2**63 - 1),
    bytes_out=st.integers(0, 2**63 - 1),
    method=st.sampled_from([b"GET", b"POST", b"PROPFIND", b"X" * 40]),
)
def test_c_and_python_write_the_same_record(
    traceparent: bytes | None, target: bytes, status: int, error: int, forked: bool,
    bytes_in: int, bytes_out: int, method: bytes,
) -> None:  # fmt: skip
    c, py = pair()
    try:
        started = time.perf_counter() - 0.002
        for recorder in (c, py):
            ids = recorder.ids("web", "pr-1", "key1")
            recorder.write(started, ids, forked, method, status, bytes_in, bytes_out,
                           traceparent, error, target=target)  # fmt: skip
        same_but_the_clock(slot_of(c, 0), slot_of(py, 0), started, c._wall)
        assert done(c) == done(py) == 1 and c.seq == py.seq == 1
    finally:
        c.close()
        py.close()


def test_plain_and_extra_records_interleave_and_done_follows() -> None:
    """Plain records from C, records with extra fields from Python, across the points where
    `done`'s whole word changes (the Python writer stores only its low byte between them)."""
    c, py = pair(4)
    fault = Fault("pr-1", {"id": "slow", "service": "mcp", "kind": "latency"})
    started = time.perf_counter()
    try:
        for n in range(70_000):
            extra = n % 7 == 3 or 250 <= n % 256 <= 255
            for recorder in (c, py):
                ids = recorder.ids("mcp", "pr-1", "key1")
                if extra:
                    recorder.write(started, ids, True, b"POST", 200, 10, 20, None, record.OK,
                                   [fault], 0.5, b"tools/call", b"t", b"1", b"/mcp")  # fmt: skip
                else:
                    recorder.write(started, ids, True, b"POST", 200, 10, 20, None, record.OK,
                                   target=b"/mcp")  # fmt: skip
            if n < 600 or n % 256 in (254, 255, 0, 1) or n % 65536 in (65535, 0):
                assert done(c) == done(py) == n + 1
                same_but_the_clock(slot_of(c, n), slot_of(py, n), started, c._wall)
    finally:
        c.close()
        py.close()


def test_the_wall_clocks_offset_follows_flush() -> None:
    recorder = Recorder(8)
    ids = recorder.ids("web", "", "")
    recorder._wall += 1000.0  # as if the wall clock had been set forward
    recorder.flush()  # (reads it again: the store gets the real offset)
    recorder.write(recorder._clock(), ids, False, b"GET", 200, 0, 0, None, 0)
    end = struct.unpack_from("<d", slot_of(recorder, 0), 8)[0]
    assert end == pytest.approx(recorder._wall + recorder._clock(), abs=0.5)
    recorder.close()


def test_a_closed_recorder_lets_go_of_its_ring() -> None:
    recorder = Recorder(8)
    store = recorder._store
    assert store is not None
    recorder.close()  # (would raise BufferError if the store still held the map)
    assert recorder.ring.closed
    with pytest.raises(ValueError, match="released"):
        store.plain(0, 0.0, 0, 0, bytes(16), None, b"")


def test_bad_arguments_are_refused_not_written() -> None:
    recorder = Recorder(8)
    store = recorder._store
    assert store is not None
    try:
        with pytest.raises(TypeError):
            store.plain(0, 0.0, 0, 0, b"short", None, b"")
        with pytest.raises(TypeError):
            store.plain(0, 0.0, 0, 0, bytes(16), "text", b"")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            store.plain(0, 0.0, 0, 0, bytes(16), None)  # type: ignore[call-arg]
        with pytest.raises(OverflowError):
            store.plain(2**64, 0.0, 0, 0, bytes(16), None, b"")
        assert done(recorder) == 0 and bytes(slot_of(recorder, 0)) == bytes(record.SLOT)
    finally:
        recorder.close()
