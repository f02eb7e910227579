"""The signals the telemetry process reports to the control plane (`POST /v1/router-signals`):
per-10-second aggregates of every request, and a record (with its span) of every request that
carried a sandbox's key.

`add` only counts, in memory. `tick` starts a report in the background and returns at once: a
control plane that hangs must not stall the loop that drains the ring. A report sends what
changed, in posts of at most `MAX_ENTRIES` buckets and `MAX_ENTRIES` request records:
- a bucket is CUMULATIVE and sent again while it changes — a busy one (`BUSY` requests or
  more: its samples make most of a post's bytes) at most every `RESEND` seconds while its
  window is open, and at once when it closes (the control plane replaces its copy
  by one with at least as many requests, so a repeat or a late arrival of an older copy is
  harmless); one older than `HORIZON` (the longest window served) is dropped unsent, and an
  acknowledged one is forgotten `GRACE` after its window closed (a straggler after that
  starts a copy the control plane ignores, being smaller: the ring is read at least every
  0.25 s, `__main__.POLL`);
  past `max_buckets` (a long outage, many pairs) the oldest windows are dropped unsent;
- a request record is sent until acknowledged, then dropped (the control plane inserts
  (instance, seq) once). At most `PER_SANDBOX` wait per sandbox (the control plane keeps that
  many of a sandbox's newest records: a sandbox busier than that between two reports would
  only send records it throws away) and `max_pending` in all; past either one of that sandbox
  is dropped and counted (`dropped_requests`) — a plain one (2xx/3xx, no error, no fault)
  before any that failed or carried a fault (`tally.notable`) —, so a long outage costs
  bounded memory, a busy sandbox cannot push out a quiet one's records, and a harness finds
  the failures even when the records are a sample. Of the plain ones, at most
  `plain_per_sandbox` wait per sandbox (`PLAIN_PER_SANDBOX`: its newest kept, the older
  dropped and counted alike);
- a failed post leaves everything pending for the next report (logged once per outage); a 422
  is logged and its entries dropped, since sending them again would not help.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from random import Random
from typing import Final

import orjson

from sandboxd_router.telemetry.buckets import WIDTH, Bucket, Key
from sandboxd_router.telemetry.post import Poster, PostError
from sandboxd_router.telemetry.request_wire import RecordText, wire_of
from sandboxd_router.telemetry.tally import Tally

log = logging.getLogger("sandboxd_router")

PATH: Final = "/v1/router-signals"
MAX_ENTRIES: Final = 1000  # the control plane's limit per post, for each list
MAX_POST_BYTES: Final = 1 << 20
"""A post's body at most (unless one bucket alone is larger): the control plane parses a post
on its event loop (~40 ms a MiB), and this process holds a post's pieces in memory while it
is sent; its own limit on this path is 8 MiB."""
_ENVELOPE: Final = 64  # `{"instance":"<16 hex>","buckets":[],"requests":[]}` and to spare
HORIZON: Final = 3600.0  # seconds: the longest window the control plane serves
GRACE: Final = 3.0
"""An acknowledged bucket is kept this long after its window, for stragglers: a request counts
in the window it ended in, and the ring is read at least every 0.25 s (`__main__.POLL`; under
load each time the router has written half the ring, ~0.1 s at 40,000 requests a second)."""
MAX_PENDING: Final = 2_000
"""Request records waiting, all sandboxes together: at most this many a second reach the
control plane from one router (each costs this process ~6 µs to build and write, on the
router's core, and the control plane a row: at 5,000 a second and 28,000 requests, that was
~1 µs a request of the ~2.5 the telemetry process spent); past it the plain ones go first (see
above). The aggregates count every request whatever this drops."""
PER_SANDBOX: Final = 1000  # the control plane's ring of a sandbox's records
PLAIN_PER_SANDBOX: Final = 250
"""Plain records (2xx/3xx, no error, no fault) waiting per sandbox: at most this many a second
reach the control plane for a sandbox, its newest. Each costs the control plane ~47 µs to
validate and store (`benchmarks/metrics_api.py`): one busy sandbox sending the whole ring's worth
(`PER_SANDBOX`) each second took 4-5 % of a core there, for records replaced a second later.
The ring then holds the newest plain records of the last four seconds or more, and every
failure up to `PER_SANDBOX`."""
MAX_BUCKETS: Final = 20_000  # ~6 KB each at most: 3,000 busy pairs need about 12,000
BUSY: Final = 64  # requests: a bucket this full re-sends its samples at most every RESEND
RESEND: Final = 5.0  # seconds (a harness reading right after its traffic: see the README)

Sent = list[tuple[Bucket, int, int]]
"""The buckets of a post, their `requests` when it was built and their `uses` (a bucket
dropped and reused meanwhile, by a report at shutdown while this one waited, is another's)."""


class SignalsSink:
    def __init__(
        self,
        *,
        url: str,
        token: str,
        interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        max_pending: int = MAX_PENDING,
        per_sandbox: int = PER_SANDBOX,
        plain_per_sandbox: int = PLAIN_PER_SANDBOX,
        max_buckets: int = MAX_BUCKETS,
        timeout: float = 5.0,
        rng: Random | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.interval = interval
        self.clock = clock
        self.max_pending = max_pending
        self.per_sandbox = per_sandbox
        self.max_buckets = max_buckets
        self.timeout = timeout
        self.instance = secrets.token_hex(8)
        self.dropped_buckets = 0
        """Buckets dropped unsent (older than `HORIZON`, or over `max_buckets`)."""
        # reservoir sampling needs no secrecy, only speed
        rng = rng or Random(os.urandom(16))  # noqa: S311
        self._tally = Tally(max_pending=max_pending, per_sandbox=per_sandbox,
                            plain_per_sandbox=plain_per_sandbox, rng=rng)  # fmt: skip
        self._buckets = self._tally.buckets
        self.add = self._tally.add
        """Count one request (the per-request work is the compiled `Tally`'s)."""
        self.add_all = self._tally.add_all
        self._text = RecordText()
        self._last = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._poster: Poster | None = None
        self._failing = False

    def outbox(self) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        """What a report would send now, in wire form: the changed buckets and the request
        records waiting (all of them, not split into posts)."""
        buckets = [b.wire(key) for key, b in self._buckets.items() if b.changed]
        return buckets, [wire_of(seq, o) for seq, o in self._tally.queued()]

    def body(self) -> bytes:
        """One post's body of all that `outbox` holds (what reports encode: for benchmarks)."""
        changed = [b.json(key) for key, b in self._buckets.items() if b.changed]
        return self._body(changed, self._text.texts(self._tally.queued()))

    @property
    def pending_requests(self) -> int:
        return self._tally.waiting

    @property
    def dropped_requests(self) -> int:
        """Request records dropped unsent (over `max_pending` or `per_sandbox`)."""
        return self._tally.dropped

    @property
    def buckets(self) -> int:
        return len(self._buckets)

    async def tick(self) -> None:
        """Start a report unless one is under way or the last began under `interval` ago."""
        task = self._task
        if task is not None:
            if not task.done():
                return
            self._task = None
            if not task.cancelled() and task.exception() is not None:
                log.error("a signals report failed", exc_info=task.exception())
        now = self.clock()
        if now - self._last < self.interval * 0.9:  # a tick called a little early still reports
            return
        self._last = now
        self._task = asyncio.create_task(self.send())

    async def send(self, *, everything: bool = False) -> None:
        """One report: everything that changed, in as many posts as it takes; stops at the
        first post that fails (the rest waits for the next report)."""
        now = self.clock()
        self._expire(now)
        changed = [
            (key, b)
            for key, b in self._buckets.items()
            if (b.changed if everything else _due(key, b, now))
        ]
        records_left = self._tally.waiting
        i = 0
        while i < len(changed) or records_left > 0:
            batch = self._tally.queued()[: min(MAX_ENTRIES, records_left)]
            try:
                texts = self._text.texts(batch)
            except (TypeError, ValueError):  # a bug of ours: drop these, never block the queue
                log.exception("%d request records cannot be encoded: dropped", len(batch))
                self._tally.acknowledged(batch)
                self._tally.dropped += len(batch)
                records_left -= len(batch)
                continue
            room = MAX_POST_BYTES - _ENVELOPE
            kept = _fitting(texts, room)
            batch, texts = batch[:kept], texts[: max(0, 2 * kept - 1)]
            encoded = _fill(changed, i, room - sum(map(len, texts)), at_least=0 if texts else 1)
            entries = changed[i : i + len(encoded)]
            if not entries and not batch:
                break  # (records dropped meanwhile)
            content = self._body(encoded, texts)
            sent: Sent = [(b, b.requests, b.uses) for _key, b in entries]
            for _key, b in entries:
                b.sent_at = now
            if not await self._post(content):
                return
            for bucket, requests, uses in sent:
                if bucket.uses == uses:
                    bucket.acked = max(bucket.acked, requests)
            self._tally.acknowledged(batch)
            i += len(entries)
            records_left -= len(batch)

    async def close(self, *, timeout: float = 0.5) -> None:
        """A last report of everything, given up after `timeout` (a report under way is
        waited for within the same time): the shutdown must not hang."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with contextlib.suppress(TimeoutError):
            if self._task is not None and not self._task.done():
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            await asyncio.wait_for(self.send(everything=True), max(0.0, deadline - loop.time()))
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._poster is not None:
            self._poster.close()
            self._poster = None

    def _body(self, buckets: list[bytes], texts: list[bytes]) -> bytes:
        """`{"instance", "buckets", "requests"}` as orjson writes it, from the buckets each
        encoded alone (`_fill`) and the records written as text (`RecordText.texts`): never a
        whole post's dicts at once."""
        head = b'{"instance":%b,"buckets":[' % orjson.dumps(self.instance)
        return b"".join([head, b",".join(buckets), b'],"requests":[', *texts, b"]}"])

    def _expire(self, now: float) -> None:
        """Forget what is too old to matter and what was acknowledged and is closed."""
        stale, closed = now - HORIZON, now - WIDTH - GRACE
        tally = self._tally
        tally.drop_buckets([k for k, b in self._buckets.items() if k[3] < closed and not b.changed])
        old = [k for k in self._buckets if k[3] < stale]
        excess = len(self._buckets) - len(old) - self.max_buckets
        if excess > 0:  # a long outage with many pairs: the oldest windows go first
            old += _oldest([k for k in self._buckets if k[3] >= stale], excess)
        tally.drop_buckets(old)
        self.dropped_buckets += len(old)

    async def _post(self, content: bytes) -> bool:
        """Whether the entries are done with: acknowledged, or refused for good (422)."""
        try:
            answer = await self._http().post(PATH, content, "application/json")
        except PostError as e:
            return self._failed(str(e))
        text = answer.body.decode("utf-8", "replace")
        if answer.status == 422:  # sending it again would not help: drop, say so
            log.error("the control plane refused router signals: %s", text[:500])
        elif not answer.ok:
            return self._failed(f"HTTP {answer.status}: {text[:200]}")
        if self._failing:
            log.info("router signals reach %s again", self.url)
            self._failing = False
        return True

    def _failed(self, why: str) -> bool:
        if not self._failing:  # once per outage, not once a second
            log.warning("cannot report router signals to %s (%s); retrying", self.url, why)
            self._failing = True
        return False

    def _http(self) -> Poster:
        if self._poster is None:
            headers = {"Authorization": f"Bearer {self.token}", "User-Agent": "sandboxd-router"}
            self._poster = Poster(self.url, headers, self.timeout)
        return self._poster


def _fitting(texts: list[bytes], room: int) -> int:
    """How many of the records in `texts` (each followed by a `b","` piece but the last) fit
    in `room` bytes (one at least)."""
    for n, at in enumerate(range(0, len(texts), 2)):
        room -= len(texts[at]) + 1
        if n and room < 0:
            return n
    return (len(texts) + 1) // 2


def _fill(
    changed: list[tuple[Key, Bucket]], first: int, room: int, *, at_least: int
) -> list[bytes]:
    """The buckets from `first` on, each encoded, as many as `room` bytes and `MAX_ENTRIES`
    take, and `at_least` (a post without records carries one, so that a report moves on)."""
    out: list[bytes] = []
    for key, bucket in changed[first : first + MAX_ENTRIES]:
        text = bucket.json(key)  # (made to its size: orjson's bytes keep the buffer it wrote in)
        room -= len(text) + 1
        if room < 0 and len(out) >= at_least:
            break
        out.append(text)
    return out


def _due(key: Key, bucket: Bucket, now: float) -> bool:
    """Whether a report sends the bucket: changed, and quiet, closed, or not sent lately."""
    if not bucket.changed:
        return False
    return bucket.requests < BUSY or key[3] + WIDTH <= now or now - bucket.sent_at >= RESEND


def _oldest(keys: list[Key], n: int) -> list[Key]:
    return sorted(keys, key=lambda k: k[3])[:n]
