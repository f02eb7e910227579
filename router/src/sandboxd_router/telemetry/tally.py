"""What the signals sink (`signals.SignalsSink`) counts between two reports, in memory: the
10-second buckets of every request, and the requests that carried a sandbox's key waiting to be
sent as records. The per-request half of the sink, compiled with the router's hot path
(`native.HOT`); the reports (I/O) stay in `signals`.

At most `per_sandbox` records wait per sandbox and `max_pending` in all; past either the oldest
of that sandbox go (counted in `dropped`).
"""

from __future__ import annotations

import logging
from collections import deque
from random import Random
from typing import Final

from sandboxd_router.telemetry.buckets import WIDTH, Bucket, Key, bin_of
from sandboxd_router.telemetry.observed import Observed
from sandboxd_router.telemetry.thousandths import round3

log = logging.getLogger("sandboxd_router.telemetry")

UNROUTED: Final = "-"  # `Observed.service` of a request no service was routed for

Waiting = tuple[int, Observed]
"""A request record waiting to be sent: its number (per instance, strictly increasing: the
control plane inserts (instance, number) once) and the request."""


class Tally:
    def __init__(self, *, max_pending: int, per_sandbox: int, rng: Random) -> None:
        self.max_pending = max_pending
        self.per_sandbox = per_sandbox
        self.rng = rng
        self.buckets: dict[Key, Bucket] = {}
        self.pending: dict[tuple[str, str], deque[Waiting]] = {}
        """(Sandbox, routing key) → its records waiting, oldest first."""
        self.waiting = 0
        self.seq = 0
        self.dropped = 0
        """Request records dropped unsent (over `max_pending` or `per_sandbox`)."""

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
        ms = round3(o.duration * 1000.0)  # to the µs: half the cost of encoding samples
        end = int(o.end)
        key = (o.sandbox, o.routing_key, o.service, end - end % WIDTH)
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = Bucket()
        bucket.add(o, ms, bin_of(ms), self.rng)
        if o.sandbox:
            self._wait(o)

    def _wait(self, o: Observed) -> None:
        self.seq += 1
        owner = (o.sandbox, o.routing_key)
        queue = self.pending.get(owner)
        if queue is None:
            queue = self.pending[owner] = deque()
        if len(queue) >= self.per_sandbox or self.waiting >= self.max_pending:
            (queue or max(self.pending.values(), key=len)).popleft()
            self.dropped += 1
            self.waiting -= 1
        queue.append((self.seq, o))
        self.waiting += 1

    def acknowledged(self, sent: list[Waiting]) -> None:
        """Drop the records sent (records added meanwhile, or dropped, are told by number)."""
        last: dict[tuple[str, str], int] = {}
        for seq, o in sent:
            last[(o.sandbox, o.routing_key)] = seq
        for owner, seq in last.items():
            queue = self.pending.get(owner)
            while queue and queue[0][0] <= seq:
                queue.popleft()
                self.waiting -= 1
            if queue is not None and not queue:
                del self.pending[owner]
