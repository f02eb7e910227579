"""What the signals sink (`signals.SignalsSink`) counts between two reports, in memory: the
10-second buckets of every request, and the requests that carried a sandbox's key waiting to be
sent as records. The per-request half of the sink, compiled with the router's hot path
(`native.HOT`); the reports (I/O) stay in `signals`.

A plain record is one of a request that got a 2xx or 3xx, no error and no fault. At most
`plain_per_sandbox` plain records wait per sandbox: past it, that sandbox's oldest plain one
goes. At most `per_sandbox` records of any kind wait per sandbox and `max_pending` in all: past
either, one of that sandbox's goes, its oldest plain record, and only when it has none left its
oldest notable one. Every record dropped is counted in `dropped`. A harness looks for what
failed: under load the records kept are a sample, and the failures stay in it.
"""

from __future__ import annotations

import itertools
import logging
from random import Random
from typing import Final

from sandboxd_router.telemetry.buckets import WIDTH, Bucket, Durations, Key
from sandboxd_router.telemetry.observed import Names, Observed

log = logging.getLogger("sandboxd_router.telemetry")

_EPOCHS: Final = itertools.count(1)  # (shared: two tallies never have the same epoch)
COMPACT: Final = 64  # records dropped from the front of a `Fifo` before its list is moved
UNROUTED: Final = "-"  # `Observed.service` of a request no service was routed for

Waiting = tuple[int, Observed]
"""A request record waiting to be sent: its number (per instance, strictly increasing: the
control plane inserts (instance, number) once) and the request."""


def notable(o: Observed) -> bool:
    """A record kept before the plain ones: an error, a fault applied, or a 4xx/5xx answer."""
    return o.injected or bool(o.error) or o.status >= 400 or o.status == 0


class Fifo:
    """Records waiting, oldest first: a list and the index of its first one still there. (A
    deque's `append` and `popleft` are method calls by name when compiled, ~230 instructions
    each; a list's `append` and item store are native.) A record's number is its `number`
    (set as it is queued: no (number, record) tuple made per request)."""

    __slots__ = ("head", "items")

    def __init__(self) -> None:
        self.items: list[Observed | None] = []
        self.head = 0

    def __len__(self) -> int:
        return len(self.items) - self.head

    def append(self, observed: Observed) -> None:
        self.items.append(observed)

    def first(self) -> int:
        """The number of the oldest (there is one)."""
        waiting = self.items[self.head]
        assert waiting is not None
        return waiting.number

    def drop_first(self) -> None:
        items, head = self.items, self.head
        items[head] = None
        head += 1
        if head == len(items):
            items.clear()
            head = 0
        elif head >= COMPACT and head * 2 >= len(items):  # (moved down once in a while)
            del items[:head]
            head = 0
        self.head = head

    def values(self) -> list[Waiting]:
        return [(o.number, o) for o in self.items[self.head :] if o is not None]


class Queue:
    """One sandbox's records waiting, each kind oldest first."""

    __slots__ = ("notable", "plain", "size")

    def __init__(self) -> None:
        self.plain = Fifo()
        self.notable = Fifo()
        self.size = 0
        """`len(self)`, kept (read for each request)."""

    def __len__(self) -> int:
        return self.size

    def drop_one(self) -> None:
        """Its oldest plain record, or its oldest notable one when it has no plain one left."""
        (self.plain if len(self.plain) else self.notable).drop_first()
        self.size -= 1

    def acknowledged(self, seq: int) -> int:
        """Drop the records numbered up to `seq`; how many went."""
        gone = 0
        plain, notable = self.plain, self.notable
        while len(plain) and plain.first() <= seq:
            plain.drop_first()
            gone += 1
        while len(notable) and notable.first() <= seq:
            notable.drop_first()
            gone += 1
        self.size -= gone
        return gone


class Open:
    """The bucket the requests of some names (`Observed.names`) count in now, and their
    sandbox's records waiting (None for no sandbox): kept on the names object the ring shares
    among the requests decoded alike (`Names.tally`), where `Tally.buckets`' key is a tuple
    made, hashed and compared per request."""

    __slots__ = ("bucket", "epoch", "queue", "start")

    def __init__(self, epoch: int, start: int, bucket: Bucket, queue: Queue | None) -> None:
        self.epoch = epoch
        """The tally's `_epoch` when made: an `Open` of another is stale."""
        self.start = start
        self.bucket = bucket
        self.queue = queue


class Tally:
    def __init__(
        self, *, max_pending: int, per_sandbox: int, plain_per_sandbox: int, rng: Random
    ) -> None:
        self.max_pending = max_pending
        self.per_sandbox = per_sandbox
        self.plain_per_sandbox = plain_per_sandbox
        self.rng = rng
        self._durations = Durations()
        self.buckets: dict[Key, Bucket] = {}
        self.pending: dict[tuple[str, str], Queue] = {}
        """(Sandbox, routing key) → its records waiting."""
        self._spare: list[Bucket] = []
        """Buckets dropped, reset and used again (`Bucket.reset`): at most as many as are live
        (the next window's names are about this one's), none once traffic stops."""
        self._epoch = next(_EPOCHS)
        """The `Open`s on names (`Names.tally`) made since the last bucket or queue went, by
        this tally: the others are stale (a new epoch whenever one goes)."""
        self._holding: list[Names] = []
        """The names given an `Open` this epoch: let go of at the next (`_new_epoch`), so that
        a stale `Open` keeps no dropped bucket nor queue alive (the ring keeps its names
        objects for long: ~3,000 buckets' samples, 26 MB, at 1,000 sandboxes)."""
        self.waiting = 0
        self.seq = 0
        self.dropped = 0
        """Request records dropped unsent (over `max_pending`, `per_sandbox` or
        `plain_per_sandbox`)."""

    def add_all(self, batch: list[Observed]) -> None:
        """`add` for each (one call for a batch: what the telemetry process's loop calls)."""
        for observed in batch:
            try:
                self.add(observed)
            except Exception:
                log.exception("the signals sink failed on a request")

    def add(self, observed: Observed) -> None:
        o = observed
        if o.service == UNROUTED:  # no service's traffic (an unknown port or host)
            return
        durations = self._durations
        ms = durations.sample(o.duration)  # to the µs: half the cost of encoding samples
        end = int(o.end)
        start = end - end % WIDTH
        names = o.names
        now = names.tally
        if not isinstance(now, Open) or now.epoch != self._epoch:
            self._holding.append(names)
            now = names.tally = self._opened(o, start)
        elif now.start != start:  # (the next window: these names are held already)
            now = names.tally = self._opened(o, start)
        now.bucket.add(o, ms, durations.slot, self.rng)
        if now.queue is not None:
            self._wait(o, now.queue)

    def _opened(self, o: Observed, start: int) -> Open:
        key = (o.sandbox, o.routing_key, o.service, start)
        bucket = self.buckets.get(key)
        if bucket is None:
            spare = self._spare
            bucket = self.buckets[key] = spare.pop() if spare else Bucket()
        queue = None
        if o.sandbox:
            owner = (o.sandbox, o.routing_key)
            queue = self.pending.get(owner)
            if queue is None:
                queue = self.pending[owner] = Queue()
        return Open(self._epoch, start, bucket, queue)

    def _wait(self, o: Observed, queue: Queue) -> None:
        self.seq += 1
        o.number = self.seq
        if notable(o):
            queue.notable.append(o)
        else:
            plain = queue.plain
            plain.append(o)
            if len(plain) > self.plain_per_sandbox:  # a busy sandbox's: its newest ones kept
                plain.drop_first()
                self.dropped += 1
                return
        queue.size += 1
        self.waiting += 1
        if queue.size > self.per_sandbox or self.waiting > self.max_pending:
            # its own first (a busy sandbox cannot push out a quiet one's records), the busiest
            # when this record is its only one
            victim = queue if queue.size > 1 else max(self.pending.values(), key=len)
            victim.drop_one()
            self.dropped += 1
            self.waiting -= 1

    def drop_buckets(self, keys: list[Key]) -> None:
        """Forget these buckets (sent, or too old to send)."""
        spare = self._spare
        for key in keys:
            bucket = self.buckets.pop(key)
            if len(spare) < len(self.buckets):
                bucket.reset()
                spare.append(bucket)
        del spare[len(self.buckets) :]
        if keys:
            self._new_epoch()

    def _new_epoch(self) -> None:
        """Every `Open` made so far is stale: forgotten by its names."""
        self._epoch = next(_EPOCHS)
        for names in self._holding:
            names.tally = None
        self._holding.clear()

    def queued(self) -> list[Waiting]:
        """Every record waiting, in the order seen (their numbers are all different: no two
        records are compared)."""
        out: list[Waiting] = []
        for queue in self.pending.values():
            out.extend(queue.plain.values())
            out.extend(queue.notable.values())
        out.sort(key=_number)
        return out

    def acknowledged(self, sent: list[Waiting]) -> None:
        """Drop the records sent (records added meanwhile, or dropped, are told by number)."""
        last: dict[tuple[str, str], int] = {}
        for seq, o in sent:
            last[(o.sandbox, o.routing_key)] = seq
        for owner, seq in last.items():
            queue = self.pending.get(owner)
            if queue is None:
                continue
            self.waiting -= queue.acknowledged(seq)
            if not queue.size:
                del self.pending[owner]
                self._new_epoch()


def _number(waiting: Waiting) -> int:
    return waiting[0]
