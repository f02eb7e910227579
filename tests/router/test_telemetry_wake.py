"""The telemetry process sleeps until the router wakes it: each time half the ring has been
written, the writer sends a wake-up on the names pipe, and the reader's loop reads the ring then
instead of waiting out `POLL`. The wake-ups carry no name and change no record."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest

from sandboxd_router import record
from sandboxd_router.record import Recorder
from sandboxd_router.telemetry import __main__ as telemetry
from sandboxd_router.telemetry.observed import Observed
from sandboxd_router.telemetry.ring import RingReader
from tests.support import poll


def write(recorder: Recorder, n: int) -> None:
    recorder.write(0.0, recorder.ids("svc", "pr-1", "k3y"), False, b"GET", 200, n, 0, None, 0)


def frames(data: bytes) -> list[int]:
    """The ids of the names pipe's frames in `data`."""
    ids, at = [], 0
    while at < len(data):
        ident, size = record.NAME.unpack_from(data, at)
        ids.append(ident)
        at += record.NAME.size + size
    return ids


def test_the_writer_sends_a_wake_up_each_half_ring() -> None:
    names_r, names_w = os.pipe()
    recorder = Recorder(1024)
    recorder.attach(names_w)
    for n in range(511):
        write(recorder, n)
    assert record.WAKE_MARK not in frames(os.read(names_r, 1 << 16))  # the names only
    write(recorder, 511)
    assert frames(os.read(names_r, 1 << 16)) == [record.WAKE_MARK]  # the 512th record
    for n in range(512, 1100):
        write(recorder, n)
    assert frames(os.read(names_r, 1 << 16)) == [record.WAKE_MARK]  # the 1,024th
    recorder.close()
    os.close(names_r)


def test_wake_ups_change_no_record_and_no_name() -> None:
    names_r, names_w = os.pipe()
    recorder = Recorder(1024)
    recorder.attach(names_w)
    reader = RingReader(recorder.fd, names_r, 0)
    decoded: list[Observed] = []
    for n in range(3000):  # five wake-ups on the pipe, read between records
        write(recorder, n)
        if n % 500 == 499:
            decoded += reader.read()
    decoded += reader.read()
    assert [o.bytes_in for o in decoded] == list(range(3000)) and reader.lost == 0
    assert {(o.service, o.sandbox, o.routing_key) for o in decoded} == {("svc", "pr-1", "k3y")}
    assert set(reader.names.values()) == {"", "svc", "pr-1\0k3y", "GET"}
    recorder.close()
    reader.close()


class Collected:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def add(self, observed: Observed) -> None:
        self.seen.append(observed.bytes_in)

    async def tick(self) -> None:
        pass

    async def close(self) -> None:
        pass


async def until(check: Callable[[], bool], what: str) -> None:
    """`poll.until` off the event loop's thread: the loop under test runs meanwhile."""
    await asyncio.to_thread(poll.until, check, timeout=10, what=what)


async def test_the_loop_reads_when_woken_not_when_polled(monkeypatch: pytest.MonkeyPatch) -> None:
    """With `POLL` and `TICK` a minute long, records reach the sinks only by a wake-up: a new
    name's, or half the ring's; closing the names pipe (the router stopping) ends the loop at
    once too."""
    monkeypatch.setattr(telemetry, "POLL", 60.0)
    monkeypatch.setattr(telemetry, "TICK", 60.0)
    names_r, names_w = os.pipe()
    recorder = Recorder(1024)
    recorder.attach(names_w)
    sink = Collected()
    loop = asyncio.create_task(telemetry.run(RingReader(recorder.fd, names_r, 0), [sink]))
    write(recorder, 0)  # its names go on the pipe: they wake the loop too
    await until(lambda: sink.seen == [0], "the first record, woken by its names")
    for n in range(1, 511):
        write(recorder, n)
    await asyncio.sleep(0.3)
    assert sink.seen == [0]  # not woken: under half the ring, no new name
    write(recorder, 511)
    await until(lambda: len(sink.seen) == 512, "half the ring, woken by the writer")
    assert sink.seen == list(range(512))
    write(recorder, 512)
    recorder.detach()  # the router stops: the last record is read, and the loop ends
    await asyncio.wait_for(loop, 10)
    assert sink.seen == list(range(513))
    recorder.close()
