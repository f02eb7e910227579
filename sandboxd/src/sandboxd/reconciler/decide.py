"""The pure part of a reconcile: from observed forks to a phase, a reason and the events.

Deterministic in its inputs (the time is passed in), so every rule is a unit test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sandboxd.core.phases import ForkState, Phase
from sandboxd.core.records import Event, ForkRecord
from sandboxd.runtime.base import ForkStatus


@dataclass(frozen=True, slots=True)
class Verdict:
    phase: Phase
    reason: str
    message: str


def verdict(forks: Sequence[ForkStatus], *, now: float, health_timeout: float) -> Verdict:
    for fork in forks:
        if fork.state == ForkState.EXITED:
            reason = fork.reason or "ForkExited"
            return Verdict(Phase.FAILED, reason, f"fork {fork.service}: {fork.message}")
    for fork in forks:
        started = fork.started_at if fork.started_at is not None else now
        timed = fork.state == ForkState.STARTING and not fork.self_timed
        if timed and now - started > health_timeout:
            return Verdict(
                Phase.FAILED,
                "HealthCheckTimeout",
                f"fork {fork.service} was not healthy {health_timeout:.0f}s after it started",
            )
    waiting = [f.service for f in forks if f.state != ForkState.READY]
    if waiting:
        return Verdict(Phase.PROVISIONING, "ForksStarting", f"waiting for {', '.join(waiting)}")
    if not forks:
        return Verdict(Phase.READY, "NoForks", "ready: no forks, every service is the baseline")
    return Verdict(Phase.READY, "ForksReady", f"all {len(forks)} forks are ready")


def fork_record(fork: ForkStatus) -> ForkRecord:
    """What the store keeps (and the API shows) of a fork the runtime observes."""
    started = None
    if fork.started_at is not None:
        started = datetime.fromtimestamp(fork.started_at, UTC)
    return ForkRecord(
        service=fork.service,
        phase=fork.state,
        ready=fork.state == ForkState.READY,
        upstream=fork.upstream,
        pid=fork.pid,
        message=fork.message,
        started_at=started,
    )


def fork_events(before: Sequence[ForkRecord], after: Sequence[ForkStatus]) -> list[Event]:
    old = {f.service: f for f in before}
    events = []
    for fork in after:
        prior = old.get(fork.service)
        if prior is None or prior.pid != fork.pid:
            verb = "adopted" if fork.adopted else "started"
            where = f"pid {fork.pid}, {fork.upstream}" if fork.pid else fork.upstream
            events.append(Event(f"Fork{verb.title()}", f"fork {fork.service} {verb} ({where})"))
            prior = None
        was = prior.phase if prior else None
        if fork.state != was and fork.state == ForkState.READY:
            events.append(Event("ForkReady", f"fork {fork.service} is ready"))
        if fork.state != was and fork.state == ForkState.EXITED:
            reason = fork.reason or "ForkExited"
            events.append(Event(reason, f"fork {fork.service}: {fork.message}", "Warning"))
    return events
