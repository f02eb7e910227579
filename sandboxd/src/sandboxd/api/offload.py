"""A request's CPU-heavy, pure work in a process of its own: the routers' signal posts (up to
8 MiB of JSON: parsing and validating one takes 30 to 200 ms of CPU).

A thread would not do: `json.loads` and pydantic's validation are single C calls that hold the
GIL from start to end, so every other request (a harness's `GET …/metrics`) would wait out the
whole parse. One process, started with the server (`start`: its imports take a second, which
a router's first post should not wait for), by `spawn` (the control plane has threads: a fork
could copy a held lock). It ignores SIGINT (the terminal's Ctrl-C is for the server, which
stops it in order) and leaves within a second of the server's death.

If the process dies (killed, out of memory), the call that was in it fails with `Unavailable`
(503: the router sends again) and the next call starts a new process.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import ParamSpec, TypeVar

from sandboxd.errors import Unavailable

P = ParamSpec("P")
T = TypeVar("T")


class Offload:
    """Runs picklable functions of picklable arguments in one worker process."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        work = functools.partial(fn, *args, **kwargs)
        pool = self._started()
        try:
            future = pool.submit(work)
        except BrokenProcessPool:  # it died between two calls: nothing of this one was lost
            self._forget(pool)
            pool = self._started()
            future = pool.submit(work)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool as e:
            self._forget(pool)
            raise Unavailable("the worker process ended during the call; send it again") from e

    def start(self) -> None:
        """Start the process now, without waiting for it to be ready."""
        self._started().submit(_nothing)

    async def close(self) -> None:
        """Stop the process (after the call it is in, if any)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    def _forget(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:
            self._pool = None
        pool.shutdown(wait=False)

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_started,
                initargs=(os.getpid(),),
            )
        return self._pool


def _nothing() -> None:
    pass


def _worker_started(server: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(server,), daemon=True).start()


def _exit_with(server: int) -> None:
    """A killed server cannot stop its worker, and the worker would wait for calls forever
    (it holds both ends of its queue's pipe): it leaves once its parent is gone."""
    while os.getppid() == server:
        time.sleep(1.0)
    os._exit(0)
