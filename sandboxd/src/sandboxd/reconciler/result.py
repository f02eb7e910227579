"""What one reconcile asks of the work queue, as in controller-runtime: `Done` (run again only
when kicked, or at the next resync) or `Requeue(after)` (run again in `after` seconds).

A failure is not a result: it is raised (see `sandboxd.runtime.errors`), and the queue backs off.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Done:
    pass


@dataclass(frozen=True, slots=True)
class Requeue:
    after: float
    """Seconds; 0 for at once (after the queue's other work)."""


DONE = Done()
Result = Done | Requeue
