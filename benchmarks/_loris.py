"""Slow-loris clients: connections that send a request head one byte a second, forever.

Each connection sends a request line, `Host`, and then the value of a header that never ends,
one byte per `interval`. When the router answers (408 from its head deadline, or 503 when at its
connection limit) or closes, the client counts how and opens a new one, so `n` stay open.
Runs its own event loop in a thread; `stop()` ends every connection.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter


class Loris:
    def __init__(self, port: int, *, n: int, interval: float = 1.0) -> None:
        self.port = port
        self.n = n
        self.interval = interval
        self.open = 0
        self.ended: Counter[str] = Counter()  # "408", "503", "closed", "refused"
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks = [asyncio.create_task(self._keep_one()) for _ in range(self.n)]
        while self.open < self.n and not self._stop.is_set():
            await asyncio.sleep(0.05)
        self._ready.set()
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _keep_one(self) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.ended["refused"] += 1
                await asyncio.sleep(0.5)
                continue
            self.open += 1
            try:
                answer = await self._drip(reader, writer)
            except OSError:
                answer = b""
            finally:
                self.open -= 1
                writer.close()
            self.ended[answer[9:12].decode() if answer.startswith(b"HTTP/1.1 ") else "closed"] += 1

    async def _drip(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        read = asyncio.ensure_future(reader.read(4096))
        try:
            while True:
                done, _ = await asyncio.wait({read}, timeout=self.interval)
                if done:
                    return read.result()
                writer.write(b"x")
        finally:
            read.cancel()
