"""What the router saw, reported to the control plane (`POST /v1/router-reports`); off the hot
path: a task that reads a snapshot of the counters about once a second.

The counters are CUMULATIVE since this process started, under a random `instance` id made at
start. The control plane keeps the greatest value per (instance, routing key, fault) and sums
over instances, so sending a value again is harmless: a report that failed is simply sent again
(its entries stay pending), and one that arrived but whose answer was lost counts nothing
twice. Only entries that changed since the last acknowledged report are sent, in reports of at
most `MAX_ENTRIES`; with nothing to send, an empty report goes every `HEARTBEAT`, to renew the
instance's lease. On a graceful shutdown `final()` sends what is pending once more; what a
router counted after its last report and before dying is the only loss.

An instance silent for longer than its lease (the control plane's `router_lease`, 10 min by
default: a partition, a stopped process) has its counts folded into the sandbox's. When it
reports again it gets 409 `instance_retired` with the values folded for it; it then takes a
new id and from then on reports its counters minus those values (`_offsets`), so the fold plus
the new instance is exactly what it counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from collections.abc import Callable, Mapping

from sandboxd_router.control import ControlClient, ControlError, Reply

log = logging.getLogger("sandboxd_router")

Entry = tuple[str, str, str, int, int, int, int]
"""(sandbox, routing key, fault id, matched, injected, unread, unrewritten): counts since the
process started."""
Snapshot = Callable[[], list[Entry]]
Counts = tuple[int, int, int, int]
ZERO: Counts = (0, 0, 0, 0)
INTERVAL = 1.0
HEARTBEAT = 30.0  # well inside the control plane's lease
MAX_ENTRIES = 1000  # the control plane's limit per report
PATH = "/v1/router-reports"
_FIELDS = ("matched", "injected", "unread", "unrewritten")


class _Sent(enum.Enum):
    OK = enum.auto()
    FAILED = enum.auto()
    RENAMED = enum.auto()  # the instance was retired: a new id, everything pending again


class Reporter:
    def __init__(
        self,
        *,
        url: str,
        token: str,
        snapshot: Snapshot,
        interval: float = INTERVAL,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.snapshot = snapshot
        self.interval = interval
        self.heartbeat = heartbeat
        self.instance = secrets.token_hex(8)
        self.seq = 0
        self._acknowledged: dict[tuple[str, str], Counts] = {}
        self._offsets: dict[tuple[str, str], Counts] = {}
        """Per (routing key, fault): what was folded for this router's retired instances."""
        self._posted = time.monotonic()
        self._failing = False

    async def run(self) -> None:
        """Report every `interval` until cancelled."""
        async with self._client() as client:
            while True:
                await asyncio.sleep(self.interval)
                await self.send(client)

    async def final(self, *, timeout: float = 0.5) -> None:
        """One last report at shutdown, given up after `timeout`: the shutdown must not hang,
        and must fit in the grace a supervisor gives it (`SANDBOXD_STOP_GRACE`, 1 s or more)."""
        async with self._client() as client:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.send(client), timeout)

    async def send(self, client: ControlClient) -> None:
        """Send the changed entries (or a heartbeat); those not acknowledged stay pending for
        the next call. Told the instance was retired, send everything at once as the new one."""
        if await self._round(client) is _Sent.RENAMED:
            await self._round(client)

    async def _round(self, client: ControlClient) -> _Sent:
        current = self._current()
        # a fault that never counted anything is not news: 3,000 new faults are not 3 reports
        pending = [e for e in current if self._acknowledged.get((e[1], e[2]), ZERO) != e[3:]]
        batches = [pending[i : i + MAX_ENTRIES] for i in range(0, len(pending), MAX_ENTRIES)]
        if not batches and time.monotonic() - self._posted >= self.heartbeat:
            batches = [[]]
        for batch in batches:
            sent = await self._post(client, batch)
            if sent is not _Sent.OK:
                return sent
        keys = {(e[1], e[2]) for e in current}  # entries the engine dropped (a deleted
        for table in (self._acknowledged, self._offsets):  # sandbox's): forget them too
            for key in [k for k in table if k not in keys]:
                del table[key]
        return _Sent.OK

    def _current(self) -> list[Entry]:
        """The snapshot minus what was folded for the retired instances."""
        if not self._offsets:
            return self.snapshot()
        return [
            (s, k, f, *_minus(counts, self._offsets.get((k, f), ZERO)))
            for s, k, f, *counts in self.snapshot()
        ]

    async def _post(self, client: ControlClient, batch: list[Entry]) -> _Sent:
        self.seq += 1
        body = {"instance": self.instance, "seq": self.seq, "faults": [_wire(e) for e in batch]}
        try:
            response = await client.post_json(PATH, body)
        except ControlError as e:
            return self._failed(str(e))
        if response.status == 409 and self._renamed(response):
            return _Sent.RENAMED
        if response.status == 422:  # sending it again would not help: drop, say so
            log.error("the control plane refused a report: %s", response.text[:500])
        elif not response.ok:
            return self._failed(f"HTTP {response.status}: {response.text[:200]}")
        for _sandbox, key, fault, *counts in batch:
            self._acknowledged[(key, fault)] = (counts[0], counts[1], counts[2], counts[3])
        self._posted = time.monotonic()
        if self._failing:
            log.info("reports to %s go through again", self.url)
            self._failing = False
        return _Sent.OK

    def _renamed(self, response: Reply) -> bool:
        """Take a new instance id when the control plane retired this one, counting what it
        folded as already reported."""
        folded = _folded(response)
        if folded is None:
            return False
        for key, counts in folded.items():
            self._offsets[key] = _plus(self._offsets.get(key, ZERO), counts)
        old, self.instance = self.instance, secrets.token_hex(8)
        self._acknowledged = {}
        log.warning("router instance %s was retired by the control plane; reporting as %s",
                    old, self.instance)  # fmt: skip
        return True

    def _failed(self, why: str) -> _Sent:
        if not self._failing:  # once per outage, not once a second
            log.warning("cannot report to %s (%s); retrying", self.url, why)
            self._failing = True
        return _Sent.FAILED

    def _client(self) -> ControlClient:
        headers = {"Authorization": f"Bearer {self.token}"}
        return ControlClient(self.url, headers=headers, timeout=5)


def _wire(entry: Entry) -> dict[str, object]:
    sandbox, key, fault, *counts = entry
    values = dict(zip(_FIELDS, counts, strict=True))
    return {"sandbox": sandbox, "routingKey": key, "fault": fault, **values}


def _folded(response: Reply) -> dict[tuple[str, str], Counts] | None:
    """The values of a 409 `instance_retired` per (routing key, fault); None when the answer
    is something else."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, Mapping) or body.get("error") != "instance_retired":
        return None
    folded: dict[tuple[str, str], Counts] = {}
    items = body.get("folded")
    for item in items if isinstance(items, list) else []:
        values = [item.get(f) for f in _FIELDS] if isinstance(item, Mapping) else []
        ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 0]
        if len(ints) != len(_FIELDS):
            return None
        key = (str(item.get("routingKey")), str(item.get("fault")))
        folded[key] = (ints[0], ints[1], ints[2], ints[3])
    return folded


def _plus(a: Counts, b: Counts) -> Counts:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3])


def _minus(a: list[int], b: Counts) -> Counts:
    return (max(0, a[0] - b[0]), max(0, a[1] - b[1]), max(0, a[2] - b[2]), max(0, a[3] - b[3]))
