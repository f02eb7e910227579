"""A work queue of sandbox names, as in controller-runtime: deduplicated, one worker per name
at a time, and a name kicked while it is being worked on runs again afterwards."""

from __future__ import annotations

import asyncio


class WorkQueue:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._again: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def add(self, name: str) -> None:
        if name in self._active:
            self._again.add(name)
        elif name not in self._queued:
            self._queued.add(name)
            self._queue.put_nowait(name)

    def add_after(self, name: str, delay: float) -> None:
        timer = self._timers.get(name)
        if timer is not None:
            if timer.when() <= asyncio.get_running_loop().time() + delay:
                return  # an earlier retry is already booked
            timer.cancel()
        self._timers[name] = asyncio.get_running_loop().call_later(delay, self._fire, name)

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
