"""The reader of the request path's ring (`sandboxd_router.record`): records decoded into
`Observed`, the names they use read off the names pipe first.

A round: read `done`, drain the names pipe (every name a record before `done` uses was sent
before it), copy the slots not yet read up to `done`, read `done` again, and keep only the
copies the writer cannot have begun overwriting meanwhile. Records overwritten before they
were read are counted in `lost`.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from typing import Any, Final

from librt.strings import read_f64_le, read_i16_le, read_i32_le, read_i64_le
from mypy_extensions import i64

from sandboxd_router import record
from sandboxd_router.telemetry.observed import (
    BASELINE,
    HTTP_5XX,
    JSONRPC,
    OK,
    SANDBOX,
    TAIL_TARGET,
    TAIL_TARGET_LEN,
    TAIL_TRACEPARENT,
    TOOL_ERROR,
    TRANSPORT,
    Fault,
    Names,
    Observed,
)

OUTCOMES: Final = (OK, HTTP_5XX, JSONRPC, TOOL_ERROR, TRANSPORT)
"""`Observed.error` by the record's error class (`record.OK`, ...: 0 to 4)."""
assert [record.OK, record.HTTP_5XX, record.JSONRPC, record.TOOL_ERROR, record.TRANSPORT] == [
    0, 1, 2, 3, 4,
]  # fmt: skip
UNKNOWN: Final = "?"  # a name that never arrived (the pipe was full for long: `Recorder._send`)
LASTS: Final = 1 << 16  # pairs of a generation whose last names are kept by id (512 KB at most)
BATCH: Final = 1024  # records decoded per read at most (the rest the next round): a read's
# objects are few enough that the heap they leave behind, fragmented, stays small


# Where the core's fields lie in a slot (`record.CORE`: checked below), read by native reads
# (`librt.strings`: compiled, a few machine instructions each, no object made for a number).
SLOT_SIZE: Final = 256
AT_END: Final = 8
AT_DURATION: Final = 16
AT_BYTES_IN: Final = 24
AT_BYTES_OUT: Final = 32
AT_SERVICE: Final = 40
AT_PAIR: Final = 44
AT_METHOD: Final = 48
AT_STATUS: Final = 52
AT_ERROR: Final = 54
AT_FLAGS: Final = 55
AT_TAIL: Final = 56
"""The record's tail (`observed.TAIL_TARGET`...): the traceparent's length and bytes, the
target's length and first bytes, up to `record.EXTRA_AT`, copied as one bytes object."""
U16: Final = 0xFFFF
U32: Final = 0xFFFFFFFF
INJECTED: Final = 1
EXTRA_FLAG: Final = 2
FORKED: Final = 4


def _check_layout() -> None:
    """The offsets above are `record.CORE`'s. (A function: the compiled build checks its
    modules together, and a module-level use of `record`'s inferred names there comes before
    their types are known.)"""
    fields = re.findall(r"\d*[a-zA-Z]", record.CORE.format)
    offsets = [struct.calcsize("<" + "".join(fields[:i])) for i in range(len(fields))]
    assert SLOT_SIZE == record.SLOT
    assert offsets[1:5] == [AT_END, AT_DURATION, AT_BYTES_IN, AT_BYTES_OUT]
    assert offsets[5:9] == [AT_SERVICE, AT_PAIR, AT_METHOD, AT_STATUS]
    assert offsets[9:12] == [AT_ERROR, AT_FLAGS, AT_TAIL]
    assert fields[11:] == ["B", "55s", "H", "40s"]  # the tail: `observed.TAIL_*`
    assert record.TRACEPARENT == TAIL_TRACEPARENT
    assert TAIL_TARGET_LEN == 1 + TAIL_TRACEPARENT
    assert TAIL_TARGET == TAIL_TARGET_LEN + 2
    assert AT_TAIL + TAIL_TARGET + record.PATH == record.EXTRA_AT == record.CORE.size
    assert (INJECTED, EXTRA_FLAG, FORKED) == (record.INJECTED, record.EXTRA_FLAG, record.FORKED)


_check_layout()


class RingError(ValueError):
    """The ring is not one this reader understands."""


class _Known(Names):
    """Names kept by the ids they were decoded from (the record's own)."""

    __slots__ = ("forked", "method_id", "service_id")

    def __init__(self, pair: tuple[str, str], ids: tuple[int, int, int], names: dict[int, str]
                 ) -> None:  # fmt: skip
        service_id, method_id, forked = ids
        sandbox, key = pair
        route = SANDBOX if forked else BASELINE
        service, method = names.get(service_id, UNKNOWN), names.get(method_id, UNKNOWN)
        super().__init__(service, sandbox, key, route, method)
        self.service_id = service_id
        self.method_id = method_id
        self.forked = forked


class RingReader:
    def __init__(self, ring_fd: int, names_fd: int, start: int) -> None:
        size = os.fstat(ring_fd).st_size
        self.ring = mmap.mmap(ring_fd, size, prot=mmap.PROT_READ)
        magic, slot, slots, _ = record.HEAD.unpack_from(self.ring, 0)
        if magic != record.MAGIC or slot != record.SLOT or size < record.HEADER + slots * slot:
            raise RingError(f"not a record ring (magic {magic:#x}, slot {slot}, size {size})")
        self.slots: int = slots
        self.names_fd = names_fd
        os.set_blocking(names_fd, False)
        self.position = start
        """The next record to read."""
        self.lost = 0
        self.eof = False
        """The writer closed the names pipe: nothing more will come once the ring is read."""
        self.names: dict[int, str] = {0: ""}
        self._pairs: dict[int, tuple[str, str]] = {}
        self._base = 0  # the first id of the names' live generation
        self._last: list[_Known | None] = []
        """By pair id past `_base`: the names its last record had (most of a sandbox's records
        have the same), found by index (a dict's lookup of an int object costs ~230
        instructions). Ids past `LASTS` are found in `_known` each time."""
        self._known: dict[tuple[int, int, int, int], _Known] = {}
        """(Pair, service, method, forked) → names: the others."""
        self._buffer = b""
        self._dead: list[tuple[int, int]] = []  # (last record using them, first live id)
        self._gone: list[tuple[int, str, str]] = []  # (records before it, sandbox, key)

    def done(self) -> int:
        value: int = record.DONE.unpack_from(self.ring, record.DONE_AT)[0]
        return value

    def read(self) -> list[Observed]:
        """The records written since the last read (at most `BATCH`), decoded."""
        done = self.done()
        self._drain_names()
        first = max(self.position, done - self.slots + 1)
        if first > self.position:
            self.lost += first - self.position
        last = min(done, first + BATCH)
        if first >= last:
            return []
        raw = self._copy(first, last)  # one or two copies from the map: not one per record
        after = self.done()
        safe = after - self.slots + 1  # a record below this may be torn (being overwritten)
        decoded: list[Observed] = []
        seq = first
        at: i64 = 0
        while seq < last:
            if seq < safe or read_i64_le(raw, at) != seq:
                self.lost += 1
            else:
                decoded.append(self._decode(raw, at, seq))
            seq += 1
            at += SLOT_SIZE
        self.position = last
        self._forget_dead()
        return decoded

    def _copy(self, first: int, last: int) -> bytes:
        """The slots of records `first` to `last` (excluded), in order, as one bytes object
        (the fields are read from it by native reads: no tuple, no object per field)."""
        size, slots = record.SLOT, self.slots
        a, b = first % slots, (last - 1) % slots + 1
        at = record.HEADER
        ring = self.ring
        if a < b:
            return ring[at + a * size : at + b * size]
        return ring[at + a * size : at + slots * size] + ring[at : at + b * size]

    def _decode(self, raw: bytes, at: i64, seq: int) -> Observed:
        """The record whose slot starts at `at` in `raw`."""
        # (mypyc reads signed numbers only: the unsigned ones masked; the sizes and the
        # number, below 2^63, read alike)
        service = int(read_i32_le(raw, at + AT_SERVICE)) & U32
        pair = int(read_i32_le(raw, at + AT_PAIR)) & U32
        method = int(read_i32_le(raw, at + AT_METHOD)) & U32
        flags = raw[at + AT_FLAGS]
        forked = flags & FORKED
        lasts, index = self._last, pair - self._base
        names = lasts[index] if 0 <= index < len(lasts) else None
        if names is None or not (
            names.service_id == service and names.method_id == method and names.forked == forked
        ):
            names = self._names(pair, service, method, forked)
        observed = Observed(
            read_f64_le(raw, at + AT_END), read_f64_le(raw, at + AT_DURATION), names.service,
            names.sandbox, names.routing_key, names.route, names.method,
            int(read_i16_le(raw, at + AT_STATUS)) & U16, read_i64_le(raw, at + AT_BYTES_IN),
            read_i64_le(raw, at + AT_BYTES_OUT), None, _outcome(raw[at + AT_ERROR]),
            bool(flags & INJECTED),
            seq=seq, names=names, tail=raw[at + AT_TAIL : at + record.EXTRA_AT],
        )  # fmt: skip
        if flags & EXTRA_FLAG:
            self._extra(observed, raw, at + record.EXTRA_AT, flags)
        return observed

    def _names(self, pair: int, service: int, method: int, forked: int) -> _Known:
        """The names of a record that had other ids than its pair's last one (kept, and
        kept as the pair's last, once every name has arrived)."""
        ids = (pair, service, method, forked)
        known = self._known.get(ids)
        if known is None:
            known = _Known(self._pair(pair), (service, method, forked), self.names)
            if pair in self.names and service in self.names and method in self.names:
                self._known[ids] = known
                self._keep_last(pair, known)
        else:
            self._keep_last(pair, known)
        return known

    def _keep_last(self, pair: int, known: _Known) -> None:
        index = pair - self._base
        if 0 <= index < LASTS:
            lasts = self._last
            if index >= len(lasts):
                lasts.extend([None] * (index + 1 - len(lasts)))
            lasts[index] = known

    def _extra(self, observed: Observed, raw: bytes, at: int, flags: int) -> None:
        """The fields only faults and MCP calls have."""
        (injected_at, f1, f2, f3, rpc_method, tool, rpc_code, protocol, id_len, rpc_id,
         session_len, session) = record.EXTRA.unpack_from(raw, at)  # fmt: skip
        observed.faults = tuple(self._fault(f) for f in (f1, f2, f3) if f)
        observed.injected_at = injected_at
        observed.rpc_method = self._name(rpc_method) if rpc_method else None
        observed.tool = self._name(tool) if tool else None
        observed.rpc_id = rpc_id[:id_len].decode("utf-8", "replace") if id_len else None
        # a session id cut by the record would name no session: left out
        observed.session = (
            session[:session_len].decode("utf-8", "replace")
            if 0 < session_len <= record.SESSION
            else None
        )
        observed.rpc_code = rpc_code if flags & record.RPC_CODE else None
        observed.protocol = self._name(protocol) if protocol else None

    def _pair(self, ident: Any) -> tuple[str, str]:
        """(Sandbox, routing key) of a pair's id (the record's int object, not unboxed), split
        once per id, not once per record."""
        pair = self._pairs.get(ident)
        if pair is None:
            sandbox, _, key = self.names.get(ident, UNKNOWN).partition("\0")
            pair = (sandbox, key)
            if ident in self.names:  # (one that never arrived may arrive later)
                self._pairs[ident] = pair
        return pair

    def _name(self, ident: int) -> str:
        return self.names.get(ident, UNKNOWN)

    def _fault(self, ident: int) -> Fault:
        kind, _, fault_id = self._name(ident).partition(" ")
        return Fault(kind=kind, id=fault_id)

    # the names pipe ------------------------------------------------------------------------
    def _drain_names(self) -> None:
        while not self.eof:
            try:
                data = os.read(self.names_fd, 1 << 16)
            except BlockingIOError:
                break
            if not data:
                self.eof = True
                break
            self._buffer += data
        self._parse_names()

    def _parse_names(self) -> None:
        buffer, at = self._buffer, 0
        while len(buffer) - at >= record.NAME.size:
            ident, size = record.NAME.unpack_from(buffer, at)
            if len(buffer) - at - record.NAME.size < size:
                break  # the rest comes with the next read
            body = buffer[at + record.NAME.size : at + record.NAME.size + size]
            at += record.NAME.size + size
            if ident == record.WAKE_MARK:
                pass  # (its work is done: it woke the reader's loop)
            elif ident == record.GENERATION_MARK:
                self._dead.append(record.GENERATION_BODY.unpack(body))
            elif ident == record.GONE_MARK:
                (after,) = record.GONE_BODY.unpack_from(body)
                sandbox, _, key = (
                    body[record.GONE_BODY.size :].decode("utf-8", "replace").partition("\0")
                )
                self._gone.append((after, sandbox, key))
            else:
                self.names[ident] = body.decode("utf-8", "replace")
        self._buffer = buffer[at:]

    def gone(self) -> list[tuple[str, str]]:
        """The sandboxes (name, routing key) that left the route table, once every record
        written before they left has been read."""
        ready = [(s, k) for after, s, k in self._gone if after <= self.position]
        if ready:
            self._gone = [g for g in self._gone if g[0] > self.position]
        return ready

    def _forget_dead(self) -> None:
        """Past the last record of an old generation, its names go."""
        while self._dead and self._dead[0][0] < self.position:
            _, live = self._dead.pop(0)
            self.names = {i: n for i, n in self.names.items() if i >= live or i == 0}
            self._pairs = {i: p for i, p in self._pairs.items() if i >= live}
            self._base, self._last = live, []  # (made again as records come)
            self._known.clear()

    def close(self) -> None:
        self.ring.close()
        os.close(self.names_fd)


def _outcome(error: int) -> str:
    """`OUTCOMES[error]` (`OK` past them), by comparisons: indexing a `Final` tuple with a
    number known only at run time makes the compiled build box the whole tuple each time."""
    if error == 0:
        return OK
    if error == 1:
        return HTTP_5XX
    if error == 2:
        return JSONRPC
    if error == 3:
        return TOOL_ERROR
    return TRANSPORT if error == 4 else OK
