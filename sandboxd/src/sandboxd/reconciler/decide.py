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


UPDATE_FAILED = "UpdateFailed"
"""A fork's new copy never became healthy; the old copy keeps serving (until the sandbox is
fixed by another update, or deleted)."""
_KEEPS = "; the old copy keeps serving"


def verdict(forks: Sequence[ForkStatus], *, now: float, health_timeout: float) -> Verdict:
    for fork in forks:
        if fork.state == ForkState.EXITED:
            reason = fork.reason or "ForkExited"
            return Verdict(Phase.FAILED, reason, f"fork {fork.service}: {fork.message}")
    for fork in forks:
        if _timed_out(fork, now=now, health_timeout=health_timeout):
            return Verdict(
                Phase.FAILED,
                "HealthCheckTimeout",
                f"fork {fork.service} was not healthy {health_timeout:.0f}s after it started",
            )
    for fork in forks:
        new = fork.replacing
        if new is not None and new.state == ForkState.EXITED:
            why = f"{new.reason or 'ForkExited'}: {new.message}"
            return Verdict(
                Phase.FAILED, UPDATE_FAILED, f"fork {fork.service}'s new copy {why}{_KEEPS}"
            )
        if new is not None and _timed_out(new, now=now, health_timeout=health_timeout):
            late = f"was not healthy {health_timeout:.0f}s after it started"
            return Verdict(
                Phase.FAILED, UPDATE_FAILED, f"fork {fork.service}'s new copy {late}{_KEEPS}"
            )
    replacing = [f.service for f in forks if f.replacing is not None]
    if replacing:
        said = ", ".join(replacing)
        return Verdict(Phase.PROVISIONING, "ForksUpdating", f"waiting for the new copy of {said}")
    waiting = [f.service for f in forks if f.state != ForkState.READY]
    if waiting:
        return Verdict(Phase.PROVISIONING, "ForksStarting", f"waiting for {', '.join(waiting)}")
    if not forks:
        return Verdict(Phase.READY, "NoForks", "ready: no forks, every service is the baseline")
    return Verdict(Phase.READY, "ForksReady", f"all {len(forks)} forks are ready")


def _timed_out(fork: ForkStatus, *, now: float, health_timeout: float) -> bool:
    started = fork.started_at if fork.started_at is not None else now
    timed = fork.state == ForkState.STARTING and not fork.self_timed
    return timed and now - started > health_timeout


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
        message=_replacing(fork) or fork.message,
        started_at=started,
    )


def _replacing(fork: ForkStatus) -> str | None:
    new = fork.replacing
    if new is None:
        return None
    pid = f" (pid {new.pid})" if new.pid else ""
    if new.state == ForkState.EXITED:
        return f"serving; its new copy{pid} failed: {new.message}"
    return f"serving while its new copy{pid} starts"


def fork_events(before: Sequence[ForkRecord], after: Sequence[ForkStatus]) -> list[Event]:
    old = {f.service: f for f in before}
    events = []
    for fork in after:
        prior = old.get(fork.service)
        promoted = fork.state == ForkState.READY and prior is not None and prior.ready
        if promoted and prior is not None and prior.pid != fork.pid and fork.pid:  # (gapless)
            moved = f"pid {prior.pid} → pid {fork.pid}, {fork.upstream}"
            events.append(Event("ForkReplaced", f"fork {fork.service} replaced ({moved})"))
        elif prior is None or prior.pid != fork.pid:
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
