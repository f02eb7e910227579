"""Waiting in tests: for a condition, never for a fixed time.

`until` calls a probe until its value is acceptable and returns that value. It retries soon at
first and then every 0.1 s, so a quick condition costs little and a slow one does not load the
server it asks. When the time is up it fails with an AssertionError that names what it awaited
and the last value (or exception) it saw, so a red test says what it waited for and how far
things got. A probe that knows waiting is pointless (the process it asks has exited) raises,
and that error ends the wait at once.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

FIRST_RETRY = 0.01
MAX_INTERVAL = 0.1


def until(
    probe: Callable[[], T],
    accept: Callable[[T], object] = bool,
    *,
    timeout: float,
    what: str = "",
    ignoring: tuple[type[Exception], ...] = (),
    context: Callable[[], str] | None = None,
) -> T:
    """`probe()` once `accept` holds for it (by default: once it is truthy).

    `ignoring`: exceptions that mean "not yet" (a server still starting); `context`: more to
    show on failure, such as a process's log, read only then.
    """
    deadline = time.monotonic() + timeout
    interval = FIRST_RETRY
    while True:
        try:
            value = probe()
        except ignoring as e:
            seen: object = e
        else:
            if accept(value):
                return value
            seen = value
        if time.monotonic() >= deadline:
            cause = seen if isinstance(seen, Exception) else None
            raise AssertionError(_failure(what or _name(probe), timeout, seen, context)) from cause
        time.sleep(interval)
        interval = min(interval * 2, MAX_INTERVAL)


def port_open(port: int, *, timeout: float, host: str = "127.0.0.1") -> None:
    """Return once something accepts TCP connections on `host:port`."""
    until(lambda: accepts(port, host=host), timeout=timeout, what=f"a listener on {host}:{port}")


def accepts(port: int, *, host: str = "127.0.0.1") -> bool:
    """Whether a TCP connection to `host:port` is accepted now."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def _failure(what: str, timeout: float, seen: object, context: Callable[[], str] | None) -> str:
    message = f"waited {timeout:g} s for {what}; last seen: {seen!r}"
    return f"{message}\n{context()}" if context is not None else message


def _name(probe: Callable[[], object]) -> str:
    """The probe by name and place, for a wait its caller did not describe."""
    code = getattr(probe, "__code__", None)
    where = f" ({Path(code.co_filename).name}:{code.co_firstlineno})" if code else ""
    return f"{getattr(probe, '__qualname__', repr(probe))}{where}"
