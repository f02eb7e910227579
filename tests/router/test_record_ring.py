"""The ring itself: a writer in another process racing a reader over a small ring never yields a
torn record, and every record is either read or counted lost; the names a record uses are
there when it is read, across a new generation of the names table too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from random import Random

from sandboxd_router.record import CLIENT_CAP, OTHER, Recorder
from sandboxd_router.telemetry import traceparent
from sandboxd_router.telemetry.observed import (
    BASELINE,
    HTTP_5XX,
    JSONRPC,
    OK,
    SANDBOX,
    TOOL_ERROR,
    TRANSPORT,
)
from sandboxd_router.telemetry.ring import RingReader

# A writer whose every field is a function of its record's number n, so that a record mixing
# two writes cannot pass for a whole one.
WRITER = """
import os, sys, time
from sandboxd_router.record import CLIENT_CAP, OTHER, Recorder
recorder = Recorder(int(sys.argv[1]))
recorder.attach(int(sys.argv[2]))
print(recorder.fd, flush=True)
sys.stdin.readline()
for n in range(int(sys.argv[3])):
    recorder.write(time.perf_counter(), recorder.ids(f"s{n % 7}", f"sb{n % 5}", f"k{n % 5}"), n % 2 == 0,
                   b"GET", 100 + n % 400, n, 3 * n, b"%055d" % n, n % 5,
                   None if n % 3 else [], 0.0, b"m%d" % (n % 11) if n % 3 == 0 else None,
                   None, b"%d" % n if n % 3 == 0 else None)
recorder.detach()
"""


def paired(slots: int, **settings: int) -> tuple[Recorder, RingReader]:
    """A recorder with a ring of `slots` and a reader of it from its first record."""
    names_r, names_w = os.pipe()
    recorder = Recorder(slots, **settings)
    recorder.attach(names_w)
    return recorder, RingReader(recorder.fd, names_r, 0)


def test_a_racing_reader_gets_whole_records_or_counts_them_lost(tmp_path: Path) -> None:
    total, slots = 200_000, 64
    names_r, names_w = os.pipe()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    with subprocess.Popen(
        [sys.executable, str(script), str(slots), str(names_w), str(total)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(names_w,), text=True,
    ) as writer:  # fmt: skip
        os.close(names_w)
        assert writer.stdout is not None and writer.stdin is not None
        fd = writer.stdout.readline().strip()
        ring_fd = os.open(f"/proc/{writer.pid}/fd/{fd}", os.O_RDONLY)
        reader = RingReader(ring_fd, names_r, 0)
        writer.stdin.write("go\n")
        writer.stdin.flush()
        read = []
        while not reader.eof or reader.position < reader.done():
            read += reader.read()
    assert len(read) + reader.lost == total
    assert 0 < len(read) < total  # (it raced: some read, some overwritten)
    numbers = [r.bytes_in for r in read]
    assert numbers == sorted(set(numbers))
    for r in read:
        n = r.bytes_in
        assert (r.bytes_out, r.status, r.traceparent) == (3 * n, 100 + n % 400, f"{n:055d}")
        assert (r.service, r.sandbox, r.routing_key) == (f"s{n % 7}", f"sb{n % 5}", f"k{n % 5}")
        assert r.route == ("sandbox" if n % 2 == 0 else "baseline") and r.method == "GET"
        assert r.error == ["", "http_5xx", "jsonrpc", "tool_error", "transport"][n % 5]
        assert r.rpc_method == (f"m{n % 11}" if n % 3 == 0 else None)
        assert r.rpc_id == (str(n) if n % 3 == 0 else None)
        assert not r.injected and r.faults == ()
    reader.close()
    os.close(ring_fd)


def test_past_a_generation_the_names_are_sent_again() -> None:
    """A names table that outgrows its generation starts afresh: records on both sides of the
    change read their own names, and the reader drops the old ones once past them."""
    recorder, reader = paired(64, generation=4)
    for n in range(12):  # 6 services, 1 method: a new generation every 4 names
        write(recorder, f"svc{n % 6}", n)
    decoded = reader.read()
    assert [(o.service, o.bytes_in) for o in decoded] == [(f"svc{n % 6}", n) for n in range(12)]
    assert len(reader.names) <= 1 + 4  # "" and the live generation's names only
    recorder.close()
    reader.close()


def test_names_that_arrive_late_name_the_records_after_them() -> None:
    """A record read before its names arrived (the pipe was full for long) reads "?"; once
    they arrive, the next records with the same ids read them."""
    names_r, names_w = os.pipe()
    recorder = Recorder(16)
    recorder.attach(names_w)
    reader = RingReader(recorder.fd, names_r, 0)
    ids = recorder.ids("svc", "pr-1", "k3y")
    recorder.write(0.0, ids, True, b"GET", 200, 1, 0, None, 0)
    late = os.read(names_r, 1 << 16)  # (taken off the pipe before the reader looks)
    (first,) = reader.read()
    assert (first.service, first.sandbox, first.routing_key) == ("?", "?", "")
    os.write(names_w, late)
    recorder.write(0.0, ids, True, b"GET", 200, 2, 0, None, 0)
    (second,) = reader.read()
    assert (second.service, second.sandbox, second.routing_key) == ("svc", "pr-1", "k3y")
    recorder.close()
    reader.close()


def test_a_lagging_reader_counts_what_was_overwritten() -> None:
    recorder, reader = paired(4)
    for n in range(10):
        write(recorder, "svc", n)
    assert [o.bytes_in for o in reader.read()] == [7, 8, 9]
    assert reader.lost == 7
    write(recorder, "svc", 10)
    assert [o.bytes_in for o in reader.read()] == [10] and reader.lost == 7
    recorder.close()
    reader.close()


def test_names_a_client_picks_are_capped() -> None:
    recorder, reader = paired(4096)
    for n in range(CLIENT_CAP + 5):
        recorder.write(0.0, recorder.ids("mcp", "", ""), False, b"POST", 200, n, 0, None, 0,
                       rpc_method=b"tools/call", tool=b"tool-%d" % n)  # fmt: skip
    tools = [o.tool for o in reader.read()]
    assert tools[:CLIENT_CAP] == [f"tool-{n}" for n in range(CLIENT_CAP)]
    assert tools[CLIENT_CAP:] == [OTHER] * 5
    assert len(reader.names) == CLIENT_CAP + 5  # and "", "mcp", "POST", "tools/call", OTHER
    recorder.close()
    reader.close()


def test_a_client_name_is_cut_and_its_control_characters_shown() -> None:
    """What the control plane accepts (256 characters, none a control character), and what
    a log line or a Prometheus label can carry."""
    recorder, reader = paired(64)
    recorder.write(0.0, recorder.ids("mcp", "", ""), False, b"POST", 200, 0, 0, None, 0,
                   rpc_method=b"tools/\x1b[2Jcall", tool=b"x\ny" + b"z" * 400)  # fmt: skip
    (observed,) = reader.read()
    assert observed.tool == "x?y" + "z" * 253
    assert observed.rpc_method == "tools/?[2Jcall"
    recorder.close()
    reader.close()


def test_the_path_is_the_target_up_to_its_query_within_the_bytes_kept() -> None:
    recorder, reader = paired(64)
    targets = {
        b"/": "/",
        b"/a?token=s3cr3t": "/a",
        b"/?": "/",
        b"?x": "",
        b"/" + b"p" * 38 + b"?q": "/" + "p" * 38,  # the `?` is the 40th byte: the last kept
        b"/" + b"p" * 39 + b"?q": "/" + "p" * 39,  # just past the bytes kept
        b"/" + b"p" * 99 + b"?q=" + b"s" * 99: "/" + "p" * 39,
        b"/caf\xc3\xa9?x": "/caf\u00e9",
    }
    for target in targets:
        recorder.write(
            0.0, recorder.ids("web", "", ""), False, b"GET", 200, 0, 0, None, 0, target=target
        )
    assert [o.path for o in reader.read()] == list(targets.values())
    recorder.close()
    reader.close()


def test_a_path_asked_for_after_its_slot_was_overwritten_is_the_records() -> None:
    """The path is decoded when first asked for: from the record's own bytes, not the ring's
    slot (written again since) nor the reader's copy of the slots (reused by the next read)."""
    recorder, reader = paired(4)
    ids = recorder.ids("web", "", "")
    for n in range(3):
        recorder.write(0.0, ids, False, b"GET", 200, n, 0, None, 0, target=b"/first/%d?q" % n)
    first = reader.read()  # (a ring of 4: the 4th record back may be being written)
    for n in range(3):
        recorder.write(0.0, ids, False, b"GET", 200, n, 0, None, 0, target=b"/again/%d" % n)
    again = reader.read()
    assert [o.path for o in first] == [f"/first/{n}" for n in range(3)]
    assert [o.path for o in again] == [f"/again/{n}" for n in range(3)]
    assert [o.fields()["path"] for o in first] == [f"/first/{n}" for n in range(3)]
    recorder.close()
    reader.close()


def test_the_outcome_and_route_are_the_records() -> None:
    recorder, reader = paired(64)
    for error in range(6):
        forked = error % 2 == 1
        recorder.write(0.0, recorder.ids("web", "", ""), forked, b"GET", 200, 0, 0, None, error)
    observed = reader.read()
    assert [o.error for o in observed] == [OK, HTTP_5XX, JSONRPC, TOOL_ERROR, TRANSPORT, OK]
    assert [o.route for o in observed] == [BASELINE, SANDBOX] * 3
    recorder.close()
    reader.close()


def test_records_decoded_alike_share_their_names() -> None:
    """A record's names are its own whatever its sandbox's last record had; the records with
    the same service, sandbox, routing key, route and method share one `Names` (the sinks keep
    what they derive from the names on it)."""
    recorder, reader = paired(512)
    rows = [(service, sandbox, forked, method)
            for service in ("web", "api") for sandbox in ("pr-1", "pr-2", "")
            for forked in (True, False) for method in (b"GET", b"POST")]  # fmt: skip
    rng = Random(5)
    seen = [rng.choice(rows) for _ in range(400)]  # (a sandbox's next record: any one)
    for n, (service, sandbox, forked, method) in enumerate(seen):
        ids = recorder.ids(service, sandbox, f"k-{sandbox}" if sandbox else "")
        recorder.write(0.0, ids, forked, method, 200, n, 0, None, 0)
    decoded = reader.read()
    assert [(o.service, o.sandbox, o.route == SANDBOX, o.method.encode()) for o in decoded] == seen
    assert [o.routing_key for o in decoded] == [f"k-{sb}" if sb else "" for _, sb, _, _ in seen]
    for o in decoded:
        names = o.names
        assert (names.service, names.sandbox, names.routing_key, names.route, names.method) == (
            o.service, o.sandbox, o.routing_key, o.route, o.method
        )  # fmt: skip
    assert len({id(o.names) for o in decoded}) == len(rows)
    recorder.close()
    reader.close()


def test_the_traceparent_is_the_records_within_the_bytes_kept() -> None:
    """The traceparent and the target come out of one bytes object (the record's tail): each
    is its own, cut where the record cut it (a header cut short ends in a dash)."""
    recorder, reader = paired(64)
    traceparents = [None, b"", b"00-ab", b"x" * 55, b"00-" + b"7" * 70, b"\xc3\xa9-\x00-"]
    for n, raw in enumerate(traceparents):
        recorder.write(0.0, recorder.ids("web", "", ""), False, b"GET", 200, n, 0, raw, 0,
                       target=b"/p%d?q" % n + b"z" * (60 * (n % 2)))  # fmt: skip
    decoded = reader.read()
    kept = [(raw or b"")[:55] + (b"-" if raw and len(raw) > 55 else b"") for raw in traceparents]
    assert [o.raw_traceparent for o in decoded] == kept
    texts = [raw.decode("ascii", "replace") if raw else None for raw in kept]
    assert [o.traceparent for o in decoded] == texts
    assert [o.path for o in decoded] == [f"/p{n}" for n in range(len(traceparents))]
    recorder.close()
    reader.close()


def test_a_version_00_traceparent_longer_than_55_characters_is_invalid() -> None:
    """Version 00 is exactly 55 characters: one with more is no parent, though its first 55
    are well formed; a later version may be longer, and is read by its first four fields."""
    recorder, reader = paired(64)
    fields = b"-" + b"4b" * 16 + b"-" + b"00f067aa0ba902b7" + b"-01"
    headers = [b"00" + fields, b"00" + fields + b"-extra", b"01" + fields + b"-extra"]
    for raw in headers:
        recorder.write(0.0, recorder.ids("web", "", ""), False, b"GET", 200, 0, 0, raw, 0)
    decoded = reader.read()
    got = [traceparent.fields_of(o.raw_traceparent) for o in decoded]
    assert got == [b"00" + fields, None, b"01" + fields]
    assert [traceparent.parse(o.traceparent) is not None for o in decoded] == [True, False, True]
    recorder.close()
    reader.close()


def test_ids_past_two_bytes_decode() -> None:
    """70,000 sandboxes' keys, then a method seen for the first time: its id is past 65,535."""
    names_r, names_w = os.pipe()
    os.set_blocking(names_r, False)
    recorder = Recorder(4)
    recorder.attach(names_w)
    reader = RingReader(recorder.fd, names_r, 0)
    for n in range(70_000):
        recorder.write(
            0.0, recorder.ids("svc", f"sb{n}", f"k{n}"), True, b"GET", 200, n, 0, None, 0
        )
        if n % 1000 == 0:
            reader.read()  # (keeps the names pipe drained)
    recorder.write(0.0, recorder.ids("svc", "sb1", "k1"), True, b"PATCH", 200, 0, 0, None, 0)
    last = reader.read()[-1]
    assert (last.method, last.sandbox, last.routing_key) == ("PATCH", "sb1", "k1")
    recorder.close()
    reader.close()


def write(recorder: Recorder, service: str, n: int) -> None:
    recorder.write(0.0, recorder.ids(service, "", ""), False, b"GET", 200, n, 0, None, 0)
