"""A work queue of sandbox names, as in controller-runtime: deduplicated, one worker per name
at a time, a name kicked while it is being worked on runs again afterwards, and a name whose
reconciles keep failing is retried after a per-name exponential backoff (`retry`), which a
success resets (`forget`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 0.5
    """Seconds before the first retry."""
    cap: float = 60.0
    """The longest wait between retries, however many failed in a row."""

    def delay(self, failures: int) -> float:
        """The wait after `failures` failures in a row: base, 2·base, 4·base, … up to cap."""
        return min(self.cap, self.base * 2.0 ** min(max(failures - 1, 0), 64))


class WorkQueue:
    def __init__(self, backoff: Backoff | None = None) -> None:
        self._backoff = backoff or Backoff()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._again: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._failures: dict[str, int] = {}

    def add(self, name: str) -> None:
        if name in self._active:
            self._again.add(name)
        elif name not in self._queued:
            self._queued.add(name)
            self._queue.put_nowait(name)

    def add_unless_booked(self, name: str) -> None:
        """`add`, unless a run is already booked for later (a periodic sweep must not cut a
        backoff short; a kick from a change, which uses `add`, does)."""
        if name not in self._timers:
            self.add(name)

    def add_after(self, name: str, delay: float) -> None:
        timer = self._timers.get(name)
        if timer is not None:
            if timer.when() <= asyncio.get_running_loop().time() + delay:
                return  # an earlier retry is already booked
            timer.cancel()
        self._timers[name] = asyncio.get_running_loop().call_later(delay, self._fire, name)

    def retry(self, name: str, *, delay: float | None = None) -> float:
        """Book a retry of a failed reconcile: after `delay` when the error knows best, else
        after the backoff for the failures in a row so far. Returns the wait."""
        failures = self._failures[name] = self._failures.get(name, 0) + 1
        wait = self._backoff.delay(failures) if delay is None else delay
        self.add_after(name, wait)
        return wait

    def failures(self, name: str) -> int:
        """Failed reconciles of `name` in a row."""
        return self._failures.get(name, 0)

    def forget(self, name: str) -> None:
        """A reconcile of `name` succeeded: its next failure starts the backoff over."""
        self._failures.pop(name, None)

    def _fire(self, name: str) -> None:
        self._timers.pop(name, None)
        self.add(name)

    async def get(self) -> str:
        name = await self._queue.get()
        self._queued.discard(name)
        self._active.add(name)
        return name

    def done(self, name: str) -> None:
        self._active.discard(name)
        if name in self._again:
            self._again.discard(name)
            self.add(name)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
