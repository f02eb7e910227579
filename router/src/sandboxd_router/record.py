"""The request path's record: one fixed-size binary record per request, written into a ring of
shared memory that the telemetry process (`sandboxd_router.telemetry`) reads.

The writer never blocks and never waits for the reader. The ring is a memfd both processes map:
a header (`HEADER` bytes: magic, slot size, slot count, then `done`, the count of records
written) and `slots` slots of `SLOT` bytes; record n goes to slot n % slots, then `done`
becomes n + 1. A reader that lags by more than the ring holds finds its records overwritten:
it counts them as lost. It copies the slots it wants, then reads `done` again: while the
writer may be writing record `done` (at most), a copied record m is whole if `done` - m <
slots (the check relies on stores becoming visible in program order, as on x86-64). Each
time half the ring has been written, the writer sends a wake-up on the names pipe: the reader
sleeps until then, or a few times a second at most, so under load it wakes ~10 times a second
(at 45,000 requests a second), not at a fixed period.

The request's path (`url.path`: the target up to `?`) and its MCP session id (`Mcp-Session-Id`,
sent only before the 2026-07-28 revision) are copied inline: the target's first `PATH` bytes
and its length (the reader keeps the bytes before a `?`, never the query's: finding the `?`
here cost the request path ~1,000 instructions), and
a session id of at most `SESSION` bytes (a longer one is left out: cut, it names no session).

Strings are small ints: each distinct service, (sandbox, routing key) pair, HTTP method, fault,
JSON-RPC method and tool name gets an id once, and its name goes to the reader on the names
pipe BEFORE the first record that uses it (the reader reads `done`, drains the pipe, then
decodes up to `done`). Names a client picks (tools, JSON-RPC methods, HTTP methods, MCP protocol
versions) are capped:
past the cap they are all `OTHER`. When the table grows past `GENERATION` entries it starts
afresh (ids keep counting up: an old record's ids stay unambiguous), and the pipe says from
which record on the old ids are dead, so the reader can drop them.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
import time
from collections.abc import Callable
from typing import Final

from librt.strings import BytesWriter, write_f64_le, write_i32_le, write_i64_le
from mypy_extensions import i64

from sandboxd_router import native
from sandboxd_router.faults import Fault

try:  # the plain record written in C (`_ringstore.c`), built with the compiled modules
    from sandboxd_router._ringstore import LAYOUT as STORE_LAYOUT
    from sandboxd_router._ringstore import Store
except ImportError:  # (a build without a C compiler: the Python writer does every record)
    STORE_LAYOUT = ()

MAGIC: Final = 0x31524253  # "SBR1"
HEADER: Final = 64
SLOT: Final = 256  # four cache lines: each line more costs the writer ~20 ns
HEAD: Final = struct.Struct("<IIQQ")  # magic, slot size, slots, done (at DONE_AT)
DONE_AT: Final = 16
DONE_WORD: Final = DONE_AT // 8
DONE = struct.Struct("=Q")  # native order: written through a memoryview of words
DONE_LOW: Final = DONE_AT if sys.byteorder == "little" else DONE_AT + 7  # its low byte
# seq, end, duration, bytes in, bytes out, service, pair, method, status, error, flags,
# traceparent's length (up to 255: the reader tells a longer header from a 55-character one)
# and bytes (struct pads with zeros and cuts past 55), the target's length
# and its first bytes
CORE: Final = struct.Struct("<QddQQIIIHBBB55sH40s")
# The six fields that repeat from one request of a decision to the next (service, pair,
# method, status, error, flags), packed once as one piece and kept on the decision's `Ids` while
# they do.
SHAPE: Final = struct.Struct("<IIIHBB")
# written only with EXTRA in flags: injected_at, 3 faults, rpc method, tool, the JSON-RPC error's
# code (with RPC_CODE in flags), the MCP protocol version, rpc id's length and bytes, the session
# id's length and bytes
EXTRA: Final = struct.Struct("<dIIIIIiIB32sB32s")
EXTRA_AT: Final = 154
TRACEPARENT: Final = 55
PATH: Final = 40
SESSION: Final = 32  # the Python SDK's session id: 32 hex digits; a longer one is not kept
RPC_ID: Final = 32

# flags
INJECTED: Final = 1
EXTRA_FLAG: Final = 2
FORKED: Final = 4  # route: the sandbox's fork served it (else the baseline)
RPC_CODE: Final = 8  # the response was a JSON-RPC error whose code was read

# error classes, as ints (the telemetry process maps them to `observed.ERRORS`)
OK: Final = 0
HTTP_5XX: Final = 1
JSONRPC: Final = 2
TOOL_ERROR: Final = 3
TRANSPORT: Final = 4

# the names pipe: (id, length) then the UTF-8 name; id GENERATION_MARK: a new generation
NAME: Final = struct.Struct("<IH")
GENERATION_MARK: Final = 0xFFFFFFFF
GENERATION_BODY: Final = struct.Struct("<QI")  # after this record, ids below this one are dead
GONE_MARK: Final = 0xFFFFFFFE  # a sandbox left the table: (the record after which) + its name
GONE_BODY: Final = struct.Struct("<Q")  # then "<sandbox>\0<routing key>" in UTF-8
WAKE_MARK: Final = 0xFFFFFFFD  # no body: half the ring was written since the last (`write`)
WAKE: Final = NAME.pack(WAKE_MARK, 0)
NAME_BYTES: Final = 1024
PENDING: Final = 4 << 20  # names held for a full pipe at most (then dropped: read as "?")
OTHER: Final = "(other)"
GENERATION: Final = 200_000  # interned names kept before starting afresh
CLIENT_CHARS: Final = 256  # a client's name is cut to this (the control plane's bound)
CLIENT_CAP: Final = 1000  # distinct tool names / JSON-RPC methods / versions interned (then OTHER)
METHOD_CAP: Final = 64  # distinct HTTP methods
ZEROS: Final = [bytes(n) for n in range(TRACEPARENT + 1)]  # what pads a short field
DEFAULT_SLOTS: Final = 1 << 13  # 2 MiB: 0.16 s of requests at 50,000 a second

assert CORE.size == EXTRA_AT
AT_SHAPE: Final = 40  # where `SHAPE` lies in `CORE` (then the traceparent's length and bytes,
# the target's length and bytes): what `_ringstore.c` is checked against
assert struct.calcsize(CORE.format[:6]) == AT_SHAPE
assert SHAPE.size == 16
assert EXTRA_AT + EXTRA.size == SLOT


class Ids:
    """A route decision's names interned (its service, and its sandbox with its routing key):
    kept on the decision, so a request pays no dictionary lookup for them. Valid while
    `epoch` is the recorder's (a new reader or a new generation of names changes it)."""

    epoch: int
    service: int
    pair: int
    shape_key: i64
    shape: bytes
    """The last record's `SHAPE` bytes, and its (method, status, error, flags) as one int."""

    def __init__(self, epoch: int, service: int, pair: int) -> None:
        self.epoch = epoch
        self.service = service
        self.pair = pair
        self.shape_key = -1
        self.shape = b""


class Recorder:
    """The writer's side, owned by the router's event loop thread (not thread-safe)."""

    def __init__(
        self, slots: int = DEFAULT_SLOTS, *, generation: int = GENERATION, store: bool = True
    ) -> None:
        """`store`: write plain records in C when this build has it (`native_store`); False:
        every record in Python (the tests compare the two)."""
        self.slots = slots
        self.generation = generation  # names kept before starting afresh
        self.fd = os.memfd_create("sandboxd-record", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, HEADER + slots * SLOT)
        self.ring = mmap.mmap(self.fd, HEADER + slots * SLOT)
        HEAD.pack_into(self.ring, 0, MAGIC, SLOT, slots, 0)
        self._words = memoryview(self.ring).cast("Q")  # the header's `done`: word DONE_AT / 8
        self.seq = 0
        self._out = BytesWriter()  # a record being built (`write`)
        self._store = native_store(self.ring, slots) if store else None
        self._plain: Callable[[int, float, int, int, bytes, bytes | None, bytes], None] | None = (
            self._store.plain if self._store is not None else None
        )
        """The C writer of plain records (a bound method: called with no lookup), or None."""
        self._clock = time.perf_counter
        """(An attribute: compiled, `time.perf_counter` is a module attribute looked up by name
        each call.)"""
        self._wall = 0.0
        """Wall-clock time minus the performance counter: one clock read per record, not two
        (set again every second by `flush`, so the wall clock's adjustments are followed)."""
        self._read_wall()
        self.names_fd = -1
        self._pending = b""  # names the pipe could not take yet (full)
        self._wake_every = max(256, slots // 2 // 256 * 256)
        """Records between two wake-ups of the reader (a multiple of 256: checked only when
        `done`'s whole word is stored). The reader sleeps until woken or for `POLL` at most:
        a wake-up costs the router more than its CPU time, since the two share a core."""
        self._next = 1  # 0 is "none"
        self._count = 0
        self.epoch = 0
        """Moves on whenever the names are forgotten: an `Ids` of an older one is stale."""
        self._services: dict[str, int] = {}
        self._pairs: dict[str, tuple[str, int]] = {}  # routing key → (sandbox, id)
        self._methods: dict[bytes, int] = {}
        self._last_method = b""  # (no request's: the parser never gives an empty method)
        self._last_method_id = 0
        self._faults: dict[Fault, int] = {}
        self._rpc: dict[bytes, int] = {}
        self._tools: dict[bytes, int] = {}
        self._protocols: dict[bytes, int] = {}  # MCP-Protocol-Version values

    def attach(self, names_fd: int) -> int:
        """A new reader (a telemetry process, perhaps started again) reads names from
        `names_fd` (non-blocking; owned from now on): every name is sent again as it is next
        used. Returns the sequence the reader starts from."""
        self.detach()
        os.set_blocking(names_fd, False)
        self.names_fd = names_fd
        self._forget()
        return self.seq

    def detach(self) -> None:
        """Close the names pipe: the reader reads what is in the ring, and stops."""
        if self.names_fd >= 0:
            os.close(self.names_fd)
        self.names_fd = -1
        self._pending = b""

    def close(self) -> None:
        self.detach()
        if self._store is not None:
            self._store.release()  # (the map cannot close while the store holds it)
        self._words.release()
        self.ring.close()
        os.close(self.fd)

    def ids(self, service: str, sandbox: str, key: str) -> Ids:
        """The ids of a decision's names (interned now if new); `key` "" for none."""
        service_id = self._services.get(service)
        if service_id is None:
            service_id = self._service(service)
        pair = 0
        if key:
            known = self._pairs.get(key)
            same = known is not None and known[0] == sandbox
            pair = known[1] if known is not None and same else self._pair(sandbox, key)
        return Ids(self.epoch, service_id, pair)

    def write(
        self,
        started: float,
        ids: Ids,
        forked: bool,
        method: bytes,
        status: int,
        bytes_in: int,
        bytes_out: int,
        traceparent: bytes | None,
        error: int,
        faults: list[Fault] | None = None,
        injected_at: float = 0.0,
        rpc_method: bytes | None = None,
        tool: bytes | None = None,
        rpc_id: bytes | None = None,
        target: bytes = b"",
        session: bytes | None = None,
        rpc_code: int | None = None,
        protocol: bytes | None = None,
    ) -> None:
        """Record one request; `started`: its `time.perf_counter()` at the head's first byte;
        `ids`: of its decision's names (`ids`), this epoch's; `target`: the request target in
        origin form (its query is not kept).

        A plain record (no fault, no MCP facts: most) is written by the C store when this
        build has one. Else the record is built in a `BytesWriter` (mypyc writes its fields as
        C: no int or float object per field, as `struct` needs) and copied into its slot in
        one slice assignment."""
        flags = FORKED if forked else 0
        extra = faults is not None or rpc_method is not None or session is not None
        first = second = third = rpc = tool_id = protocol_id = 0
        if extra:  # (interned before the method, as ever: the names pipe's order is kept)
            flags |= EXTRA_FLAG
            if rpc_code is not None:
                flags |= RPC_CODE
            if faults:
                flags |= INJECTED
                first = self._fault(faults[0])
                if len(faults) > 1:
                    second = self._fault(faults[1])
                if len(faults) > 2:
                    third = self._fault(faults[2])
            rpc = self._client(self._rpc, rpc_method)
            tool_id = self._client(self._tools, tool)
            protocol_id = self._client(self._protocols, protocol)
        if method == self._last_method:  # (most requests of a stream share a method)
            method_id = self._last_method_id
        else:
            known = self._methods.get(method)
            method_id = self._method(method) if known is None else known
            self._last_method = method
            self._last_method_id = method_id
        # (an i64: shifts in C; status < 2**16, error and flags < 2**8)
        key: i64 = i64(method_id) | i64(status) << 32 | i64(error) << 48 | i64(flags) << 56
        if key != ids.shape_key:
            ids.shape = SHAPE.pack(ids.service, ids.pair, method_id, status, error, flags)
            ids.shape_key = key
        seq = self.seq
        plain = self._plain
        if plain is not None and not extra:
            # (it stores `done`'s whole word: the low byte stored below stays right after it)
            plain(seq, started, bytes_in, bytes_out, ids.shape, traceparent, target)
            seq += 1
            self.seq = seq
            if not seq & 0xFF and seq % self._wake_every == 0:
                self._send(WAKE)
            return
        now = self._clock()
        out = self._out
        out.truncate(0)
        write_i64_le(out, seq)  # (the "Q" fields: below 2**63, the same 8 bytes)
        write_f64_le(out, now + self._wall)
        write_f64_le(out, now - started)
        write_i64_le(out, bytes_in)
        write_i64_le(out, bytes_out)
        out.write(ids.shape)
        if traceparent is None:
            out.append(0)
            out.write(ZEROS[TRACEPARENT])
        else:
            out.append(min(len(traceparent), 255))  # (the reader tells a longer one by it)
            _field(out, traceparent, TRACEPARENT)
        length = min(len(target), 0xFFFF)
        out.append(length & 0xFF)
        out.append(length >> 8)
        if length < PATH:  # (most targets: written here, not by a call)
            out.write(target)
            out.write(ZEROS[PATH - length])
        else:
            _field(out, target, PATH)  # (the reader keeps the bytes before a `?`)
        if extra:
            write_f64_le(out, injected_at)
            _u32(out, first)
            _u32(out, second)
            _u32(out, third)
            _u32(out, rpc)
            _u32(out, tool_id)
            write_i32_le(out, rpc_code if rpc_code is not None else 0)
            _u32(out, protocol_id)
            if rpc_id is None:
                out.append(0)
                out.write(ZEROS[RPC_ID])
            else:
                out.append(min(len(rpc_id), RPC_ID))
                _field(out, rpc_id, RPC_ID)
            if session is None:
                out.append(0)
                out.write(ZEROS[SESSION])
            else:
                out.append(min(len(session), 255))  # (> SESSION: cut, and read as none)
                _field(out, session, SESSION)
        # A slice made per record, not one kept per slot: the kept ones (a slice and two ints a
        # slot) held 1.1 MB resident and were read cold, a record each. Making it costs ~500
        # instructions (benchmarks/router_instructions.py), 30-60 ns alone, and about what the
        # cold reads cost under load (~0.1 µs a request: benchmarks/signals_perf.py --profile);
        # `mmap.write` at the mapping's position costs the same instructions.
        offset = HEADER + seq % self.slots * SLOT
        self.ring[offset : offset + (SLOT if extra else EXTRA_AT)] = out.getvalue()
        seq += 1
        self.seq = seq
        # last: the record is whole before the reader may read it. Mostly only `done`'s low byte
        # changes: that byte stored through the mmap (a small int: no int object made) costs ~70
        # instructions less than the word through the memoryview.
        if seq & 0xFF:
            self.ring[DONE_LOW] = seq & 0xFF
        else:
            self._words[DONE_WORD] = seq
            if seq % self._wake_every == 0:
                self._send(WAKE)

    # interning (rare: a name's first use) -----------------------------------------------------
    def _service(self, name: str) -> int:
        ident = self._name(name)
        self._services[name] = ident
        return ident

    def _pair(self, sandbox: str, key: str) -> int:
        ident = self._name(f"{sandbox}\0{key}")
        self._pairs[key] = (sandbox, ident)
        return ident

    def _method(self, method: bytes) -> int:
        if len(self._methods) >= METHOD_CAP:
            return self._name(OTHER, cache=self._methods)
        ident = self._name(method.decode("ascii", "replace"))
        self._methods[method] = ident
        return ident

    def _fault(self, fault: Fault) -> int:
        ident = self._faults.get(fault)
        if ident is None:
            ident = self._name(f"{fault.kind} {fault.id}")
            self._faults[fault] = ident
        return ident

    def _client(self, table: dict[bytes, int], name: bytes | None) -> int:
        """A name a client chose: bounded (`CLIENT_CAP` per table, then `OTHER`)."""
        if name is None:
            return 0
        ident = table.get(name)
        if ident is not None:
            return ident
        if len(table) >= CLIENT_CAP:
            return self._name(OTHER, cache=table)
        ident = self._name(_printable(name.decode("utf-8", "replace")[:CLIENT_CHARS]))
        table[name] = ident
        return ident

    def _name(self, name: str, cache: dict[bytes, int] | None = None) -> int:
        """A new id for `name`, sent to the reader now. With `cache`: `OTHER`, once per table
        (kept under a key no client's name can be: the scanner's names hold no NUL)."""
        if cache is not None:
            known = cache.get(b"\0other")
            if known is not None:
                return known
        if self._count >= self.generation:
            self._forget()
            self._send(NAME.pack(GENERATION_MARK, GENERATION_BODY.size))
            self._send(GENERATION_BODY.pack(self.seq, self._next))
        ident = self._next
        self._next += 1
        self._count += 1
        raw = name.encode("utf-8", "replace")[:NAME_BYTES]
        self._send(NAME.pack(ident, len(raw)) + raw)
        if cache is not None:
            cache[b"\0other"] = ident
        return ident

    def gone(self, sandbox: str, key: str) -> None:
        """Tell the reader a sandbox left the route table (deleted): its series may go once
        the records written before now are read."""
        body = GONE_BODY.pack(self.seq) + f"{sandbox}\0{key}".encode("utf-8", "replace")
        self._send(NAME.pack(GONE_MARK, len(body)) + body)

    def _forget(self) -> None:
        self._count = 0
        self.epoch += 1
        self._last_method = b""
        self._services.clear()
        self._pairs.clear()
        self._methods.clear()
        self._faults.clear()
        self._rpc.clear()
        self._tools.clear()
        self._protocols.clear()

    def _send(self, message: bytes) -> None:
        """Never blocks: what a full pipe cannot take waits in `_pending`, sent first next time
        (or by `flush`, from the router's once-a-second sweep); past `PENDING` a new message is
        dropped whole. A closed pipe (the reader died: a new one will `attach`) takes nothing."""
        if self.names_fd < 0:
            return
        data = self._pending + message if self._pending else message
        try:
            sent = os.write(self.names_fd, data) if data else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self._pending = b""
            return
        rest = data[sent:]
        if len(rest) > PENDING:  # (so the message is wholly unsent: it goes, the rest stays)
            rest = rest[: len(rest) - len(message)]
        self._pending = rest

    def flush(self) -> None:
        """Once a second: names a full pipe held back, and the wall clock's offset."""
        self._read_wall()
        if self._pending:
            self._send(b"")

    def _read_wall(self) -> None:
        self._wall = time.time() - time.perf_counter()
        if self._store is not None:
            self._store.wall = self._wall


def native_store(ring: mmap.mmap, slots: int) -> Store | None:
    """The C writer of plain records on `ring`, when this build runs compiled (`native.mode`:
    its C was built with the compiled modules, from the source beside it) and was written for
    this layout; else None."""
    tp_len = AT_SHAPE + SHAPE.size
    layout = (HEADER, SLOT, DONE_AT, AT_SHAPE, SHAPE.size, tp_len, TRACEPARENT,
              tp_len + 1 + TRACEPARENT, PATH)  # fmt: skip
    if native.mode != "compiled" or layout != STORE_LAYOUT:
        return None
    return Store(ring, slots)


def _u32(out: BytesWriter, value: int) -> None:
    """An unsigned 32-bit field (as `struct`'s "I"): mypyc writes only signed ones natively."""
    write_i32_le(out, value - (1 << 32) if value >= 1 << 31 else value)


def _field(out: BytesWriter, value: bytes, size: int) -> None:
    """`value` as a field of `size` bytes: cut, or padded with zeros (as `struct`'s "s")."""
    n = len(value)
    if n >= size:
        out.write(value if n == size else value[:size])
    else:
        out.write(value)
        out.write(ZEROS[size - n])


def _printable(name: str) -> str:
    """A client's name with its control characters as "?": it reaches logs, Prometheus labels
    and the control plane (which refuses them)."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else "?" for c in name)
