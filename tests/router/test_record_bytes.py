"""The writer's bytes: each record's slot holds exactly what `record.CORE` (and, with EXTRA in
its flags, `record.EXTRA`) pack from its fields, and `done` counts the records written, past
the points where more than its low byte changes."""

from __future__ import annotations

import struct

from sandboxd_router import record
from sandboxd_router.faults import Fault
from sandboxd_router.record import Recorder

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SLOW = Fault("pr-1", {"id": "slow", "service": "mcp", "kind": "latency"})


def slot(recorder: Recorder, n: int) -> bytes:
    at = record.HEADER + (n % recorder.slots) * record.SLOT
    return bytes(recorder.ring[at : at + record.SLOT])


def done(recorder: Recorder) -> int:
    value: int = record.DONE.unpack_from(recorder.ring, record.DONE_AT)[0]
    return value


def test_a_records_bytes_are_its_fields_packed() -> None:
    recorder = Recorder(8)
    ids = recorder.ids("web", "pr-1", "key1")
    cases = [  # (traceparent, target): absent, short, exact, too long for their fields
        (None, b""),
        (TRACEPARENT, b"/"),
        (TRACEPARENT[:20], b"/a/b?q=1"),
        (TRACEPARENT + b"-extra", b"/" + b"x" * 70),
        (b"t" * 300, b"/" * 40),
    ]
    for n, (traceparent, target) in enumerate(cases):
        started = 100.0 + n
        recorder.write(started, ids, n % 2 == 1, b"GET", 200 + n, n, 1024 * n, traceparent,
                       n % 5, target=target)  # fmt: skip
        core = slot(recorder, n)[: record.EXTRA_AT]
        seq, end, duration = struct.unpack_from("<Qdd", core)
        assert seq == n and abs(end - recorder._wall - started - duration) < 1e-3  # (one clock)
        expected = record.CORE.pack(
            n, end, duration, n, 1024 * n, ids.service, ids.pair, recorder._methods[b"GET"], 200 + n, n % 5,
            record.FORKED if n % 2 == 1 else 0,
            min(len(traceparent), 255) if traceparent is not None else 0,
            traceparent or b"", len(target), target,
        )  # fmt: skip
        assert core == expected
    recorder.close()


def test_an_extra_records_bytes_are_its_fields_packed() -> None:
    recorder = Recorder(8)
    ids = recorder.ids("mcp", "", "")
    recorder.write(0.0, ids, False, b"POST", 200, 180, 900, TRACEPARENT, record.JSONRPC,
                   [SLOW], 0.25, b"tools/call", b"describe", b'"id-1"', b"/mcp",
                   b"s" * 40, -32602, b"2025-06-18")  # fmt: skip
    recorder.write(0.0, ids, False, b"POST", 200, 0, 0, None, 0, None, 0.0, b"initialize")
    first, second = slot(recorder, 0), slot(recorder, 1)
    fault, rpc, tool, protocol, initialize = 2, 3, 4, 5, 7  # (ids in the order interned)
    flags = record.EXTRA_FLAG | record.INJECTED | record.RPC_CODE
    assert first[54:58] == bytes([record.JSONRPC, flags, 55, TRACEPARENT[0]])
    assert first[record.EXTRA_AT :] == record.EXTRA.pack(
        0.25, fault, 0, 0, rpc, tool, -32602, protocol, 6, b'"id-1"', 40, b"s" * 40
    )
    assert second[record.EXTRA_AT :] == record.EXTRA.pack(
        0.0, 0, 0, 0, initialize, 0, 0, 0, 0, b"", 0, b""
    )
    recorder.close()


def test_done_counts_every_record_written() -> None:
    recorder = Recorder(4)
    ids = recorder.ids("web", "", "")
    for n in range(1, 70_000):  # (past 2**8 and 2**16: more than the low byte changes)
        recorder.write(0.0, ids, False, b"GET", 200, 0, 0, None, 0)
        if n < 600 or n % 256 in (255, 0, 1):
            assert done(recorder) == n
    assert done(recorder) == recorder.seq == 69_999
    recorder.close()
