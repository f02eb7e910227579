"""Slow clients, seen by the router's once-a-second sweep rather than a timer per request.

A request head must be whole within `head_timeout` of the sweep that first saw it; a body must
move within `body_timeout`. The sweep remembers what the client sent last; a head or body that
makes no progress between sweeps past its deadline is a stall. A request costs no timer and no
clock read.
"""

from __future__ import annotations

from sandboxd_router.state import Limits


class StallWatch:
    __slots__ = ("_progress", "_since", "_watched")

    def __init__(self) -> None:
        self._watched: object | None = None  # the request being read, as last seen
        self._progress = -1  # bytes of its body (-1: its head is not whole yet)
        self._since = 0.0

    def forget(self) -> None:
        self._watched = None

    def check(self, request: object, progress: int, now: float, limits: Limits) -> str | None:
        """Why `request` (being read, `progress` body bytes, -1 while in its head) has stalled,
        or None while it moves or is still within its deadline."""
        if request is not self._watched or progress != self._progress:
            self._watched, self._progress, self._since = request, progress, now
            return None
        if progress < 0 and now - self._since > limits.head_timeout:
            return "the request head did not arrive in time"
        if progress >= 0 and now - self._since > limits.body_timeout:
            return "the request body stalled"
        return None
