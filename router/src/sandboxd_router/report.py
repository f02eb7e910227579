"""What the router saw, reported to the control plane (`POST /v1/router-reports`); off the hot
path: a task that reads a snapshot of the counters about once a second.

The counters are CUMULATIVE since this process started, under a random `instance` id made at
start. The control plane keeps the greatest value per (instance, routing key, fault) and sums
over instances, so sending a value again is harmless: a report that failed is simply sent again
(its entries stay pending), and one that arrived but whose answer was lost counts nothing
twice. Only entries that changed since the last acknowledged report are sent, in reports of at
most `MAX_ENTRIES`. On a graceful shutdown `final()` sends what is pending once more; what a
router counted after its last report and before dying is the only loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable

import httpx

log = logging.getLogger("sandboxd_router")

Entry = tuple[str, str, str, int, int]
"""(sandbox, routing key, fault id, matched, injected): counts since the process started."""
Snapshot = Callable[[], list[Entry]]
INTERVAL = 1.0
MAX_ENTRIES = 1000  # the control plane's limit per report
PATH = "/v1/router-reports"


class Reporter:
    def __init__(
        self, *, url: str, token: str, snapshot: Snapshot, interval: float = INTERVAL
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.snapshot = snapshot
        self.interval = interval
        self.instance = secrets.token_hex(8)
        self.seq = 0
        self._acknowledged: dict[tuple[str, str], tuple[int, int]] = {}
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

    async def send(self, client: httpx.AsyncClient) -> None:
        """Send the changed entries; those not acknowledged stay pending for the next call."""
        current = self.snapshot()
        pending = [e for e in current if self._acknowledged.get((e[1], e[2])) != e[3:]]
        for start in range(0, len(pending), MAX_ENTRIES):
            if not await self._post(client, pending[start : start + MAX_ENTRIES]):
                return
        if len(self._acknowledged) > len(current):  # entries the engine dropped (a deleted
            keys = {(e[1], e[2]) for e in current}  # sandbox's): forget them too
            self._acknowledged = {k: v for k, v in self._acknowledged.items() if k in keys}

    async def _post(self, client: httpx.AsyncClient, batch: list[Entry]) -> bool:
        self.seq += 1
        body = {"instance": self.instance, "seq": self.seq, "faults": [_wire(e) for e in batch]}
        try:
            response = await client.post(PATH, json=body)
        except httpx.HTTPError as e:
            return self._failed(f"{type(e).__name__}: {e}")
        if response.status_code == 422:  # sending it again would not help: drop, say so
            log.error("the control plane refused a report: %s", response.text[:500])
        elif not response.is_success:
            return self._failed(f"HTTP {response.status_code}: {response.text[:200]}")
        for _sandbox, key, fault, matched, injected in batch:
            self._acknowledged[(key, fault)] = (matched, injected)
        if self._failing:
            log.info("reports to %s go through again", self.url)
            self._failing = False
        return True

    def _failed(self, why: str) -> bool:
        if not self._failing:  # once per outage, not once a second
            log.warning("cannot report to %s (%s); retrying", self.url, why)
            self._failing = True
        return False

    def _client(self) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=httpx.Timeout(5))


def _wire(entry: Entry) -> dict[str, object]:
    sandbox, key, fault, matched, injected = entry
    return {"sandbox": sandbox, "routingKey": key, "fault": fault,
            "matched": matched, "injected": injected}  # fmt: skip
