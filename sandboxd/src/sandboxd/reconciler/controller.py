"""The reconcile loop: workers converge one sandbox each; a sweep reaps, resyncs and collects.

Level-triggered: `reconcile(name)` reads the row and what the runtime observes, and converges,
whatever happened before; kicks (from the API, the runtime's monitor, timers) only decide when.
It returns `Done` or `Requeue(after)`. A `PermanentError` while converging fails the sandbox,
once, with its reason; any other failure is retried after a per-name backoff (the queue's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sandboxd.core.catalog import Catalog
from sandboxd.core.clock import rfc3339, utcnow
from sandboxd.core.phases import LIVE, Phase
from sandboxd.core.plan import PlanError, plan_sandbox
from sandboxd.core.records import Event, EventType, ForkRecord
from sandboxd.metrics import Metrics
from sandboxd.reconciler.decide import UPDATE_FAILED, fork_events, fork_record, verdict
from sandboxd.reconciler.queue import Backoff, WorkQueue
from sandboxd.reconciler.result import DONE, Requeue, Result
from sandboxd.routebook import RouteBook
from sandboxd.runtime.base import Runtime
from sandboxd.runtime.errors import PermanentError, ReconcileError, TemporaryError
from sandboxd.store.repository import Store
from sandboxd.store.tables import SandboxRow

log = logging.getLogger(__name__)

Spans = Callable[[str, Mapping[str, str]], AbstractContextManager[Any]]
"""Starts a span (name, attributes) current for the block: `tracing.Tracing.internal`."""


@dataclass(frozen=True, slots=True)
class ReconcilerConfig:
    router_host: str
    workdir: str | None
    health_timeout: float
    sweep_interval: float
    workers: int
    resync_interval: float = 60.0
    """Every sandbox is reconciled at least this often, even if nothing kicked it."""
    drain: float = 0.5
    """Seconds between a sandbox leaving the route table and its forks being stopped, so that
    routers have the new table (and requests in flight finish) before the upstreams go."""
    backoff: Backoff = field(default_factory=Backoff)
    """Waits between retries of a sandbox whose reconciles fail."""


class Reconciler:
    def __init__(
        self,
        *,
        store: Store,
        runtime: Runtime,
        catalog: Catalog,
        routes: RouteBook,
        metrics: Metrics,
        config: ReconcilerConfig,
        spans: Spans | None = None,
    ) -> None:
        self._store = store
        self._runtime = runtime
        self._catalog = catalog
        self._routes = routes
        self._metrics = metrics
        self._config = config
        self._spans = spans
        """With tracing on: a reconcile and a sweep are each a trace, the runtime's calls
        (Kubernetes) its children."""
        self._queue = WorkQueue(config.backoff)
        self._collecting: set[str] = set()  # orphans being removed
        self.heartbeat = time.monotonic()

    def kick(self, name: str) -> None:
        """Converge `name` soon (safe from the event loop thread only)."""
        self._queue.add(name)

    def alive(self) -> bool:
        return time.monotonic() - self.heartbeat < max(10.0, 3 * self._config.sweep_interval)

    async def run(self) -> None:
        workers = [
            asyncio.create_task(self._worker(), name=f"reconcile-{i}")
            for i in range(self._config.workers)
        ]
        try:
            await self._sweeper()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self._queue.close()

    async def _sweeper(self) -> None:
        next_sweep = next_resync = 0.0
        while True:
            self.heartbeat = time.monotonic()
            if self.heartbeat >= next_sweep:
                full = self.heartbeat >= next_resync
                try:
                    with self._span("sweep", {"sandboxd.sweep.full": str(full).lower()}):
                        await self.sweep(full=full)
                except ReconcileError as e:
                    log.warning("sweep: %s; retrying at the next interval", e)
                except Exception:
                    log.exception("sweep failed; retrying at the next interval")
                next_sweep = time.monotonic() + self._config.sweep_interval
                if full:
                    next_resync = time.monotonic() + self._config.resync_interval
            await asyncio.sleep(min(1.0, self._config.sweep_interval))

    async def sweep(self, *, full: bool) -> None:
        """Reap expired sandboxes and collect runtime orphans; converge every sandbox that is
        not settled (all of them when `full`). A settled sandbox — Ready or Failed — is
        otherwise kicked by the runtime when one of its forks changes."""
        expired = await self._store.expire_due(now=utcnow())
        self._metrics.expired.inc(len(expired))
        await self._store.prune_signals(now=time.time())
        phases = [*LIVE, Phase.TERMINATING]
        since = self._routes.mark()
        rows = await self._store.sandboxes(phases=phases)
        self._routes.reload(rows, since=since)
        self._metrics.routes.set(self._routes.table.sandboxes)
        for phase in Phase:
            if phase != Phase.DELETED:
                self._metrics.sandboxes.labels(phase.value).set(
                    sum(1 for r in rows if r.phase == phase)
                )
        settled = (Phase.READY.value, Phase.FAILED.value)
        due = {row.name for row in rows if full or row.phase not in settled}
        held = await self._runtime.sandboxes()
        for name in due | (held - {row.name for row in rows}):
            self._queue.add_unless_booked(name)

    async def _worker(self) -> None:
        while True:
            name = await self._queue.get()
            try:
                await self._run(name)
            finally:
                self._queue.done(name)

    async def _run(self, name: str) -> None:
        """One reconcile of `name`, and its next run booked: as asked, or after a backoff."""
        try:
            with self._span("reconcile", {"sandboxd.sandbox": name}):
                result = await self.reconcile(name)
        except TemporaryError as e:
            wait = self._queue.retry(name, delay=e.delay)
            log.warning("reconcile %s: %s; retrying in %.3gs", name, e, wait)
            self._metrics.reconciles.labels("retry").inc()
        except PermanentError as e:  # with no sandbox to fail (it is being deleted, or gone)
            self._queue.forget(name)
            log.error("reconcile %s: %s; not retried before the next resync", name, e)
            self._metrics.reconciles.labels("permanent").inc()
        except Exception:  # a bug, or a failure no runtime foresaw: its traceback, once a streak
            first = self._queue.failures(name) == 0
            wait = self._queue.retry(name)
            log.log(
                logging.ERROR if first else logging.WARNING,
                "reconcile %s failed; retrying in %.3gs",
                name,
                wait,
                exc_info=first,
            )
            self._metrics.reconciles.labels("error").inc()
        else:
            self._queue.forget(name)
            if isinstance(result, Requeue):
                self._queue.add_after(name, result.after)
                self._metrics.reconciles.labels("requeue").inc()
            else:
                self._metrics.reconciles.labels("done").inc()

    def _span(self, name: str, attributes: Mapping[str, str]) -> AbstractContextManager[Any]:
        return self._spans(name, attributes) if self._spans else contextlib.nullcontext()

    async def reconcile(self, name: str) -> Result:
        """Converge one sandbox; when it should run again."""
        row = await self._store.get(name)
        if row is not None and row.phase in LIVE and row.expires_at <= utcnow():
            await self._store.expire_due(now=utcnow())
            row = await self._store.get(name)
        if row is None or row.phase == Phase.DELETED:
            return await self._collect_orphan(name, row)
        if row.phase == Phase.TERMINATING:
            return await self._finish_delete(row)
        if row.phase == Phase.FAILED and row.reason != UPDATE_FAILED:
            return DONE if await self._runtime.stop(name, keep_logs=True) else Requeue(1.0)
        try:
            return await self._converge(row)
        except PermanentError as e:  # the same request would fail the same way: stop asking
            log.warning("sandbox %s failed: %s", name, e)
            await self._write(row, Phase.FAILED, e.reason, e.message, row.forks, [])
            return Requeue(0.0)  # stop its forks now, keeping their logs

    async def _converge(self, row: SandboxRow) -> Result:
        try:
            plan = plan_sandbox(
                row.spec,
                uid=row.uid,
                routing_key=row.routing_key,
                catalog=self._catalog,
                router_host=self._config.router_host,
                workdir=self._config.workdir,
                runtime=self._runtime.kind,
                expires_at=rfc3339(row.expires_at, timespec="seconds"),
            )
        except (PlanError, ValueError) as e:
            raise PermanentError("InvalidSpec", str(e)) from e
        observed = await self._runtime.apply(plan)
        result = verdict(observed, now=time.time(), health_timeout=self._config.health_timeout)
        events = fork_events(row.forks, observed)
        records = [fork_record(f) for f in observed]
        await self._write(row, result.phase, result.reason, result.message, records, events)
        if result.phase == Phase.PROVISIONING:
            return Requeue(self._runtime.poll_interval)
        if result.phase == Phase.FAILED and result.reason != UPDATE_FAILED:
            return Requeue(0.0)  # stop its forks now, keeping their logs
        return DONE  # (a failed update: the old copies serve on; the runtime kicks on a change)

    async def _finish_delete(self, row: SandboxRow) -> Result:
        draining = self._config.drain - (utcnow() - row.updated_at).total_seconds()
        if draining > 0:
            return Requeue(draining)
        if not await self._runtime.stop(row.name):
            return Requeue(1.0)
        stopped = [f.stopped() for f in row.forks]
        event = Event("Deleted", "all forks stopped; the sandbox is gone")
        message = f"deleted ({row.reason or 'requested'})"
        await self._write(row, Phase.DELETED, row.reason, message, stopped, [event], announce=False)
        return DONE

    async def _collect_orphan(self, name: str, row: SandboxRow | None) -> Result:
        if name not in await self._runtime.sandboxes():
            self._collecting.discard(name)
            return DONE
        if name not in self._collecting:  # tell it once, when the removal starts
            self._collecting.add(name)
            log.warning("removing what the runtime holds for %s, which has no live sandbox", name)
            if row is not None:
                event = Event("OrphanRemoved", f"removing leftover {self._runtime.kind} resources")
                await self._store.record(row, event)
        if not await self._runtime.stop(name):
            return Requeue(1.0)
        self._collecting.discard(name)
        return DONE

    async def _write(
        self,
        row: SandboxRow,
        phase: Phase,
        reason: str | None,
        message: str | None,
        forks: list[ForkRecord],
        events: list[Event],
        *,
        announce: bool = True,
    ) -> None:
        """Store the new status; `announce` adds an event for a phase change (unless the
        caller's events already tell it)."""
        unchanged = (phase.value, reason, message, forks) == (
            row.phase,
            row.reason,
            row.message,
            row.forks,
        )
        if unchanged and not events:
            return
        if phase.value != row.phase:
            self._metrics.transitions.labels(phase.value).inc()
            if announce:
                events = [*events, Event(reason or phase.value, message or "", _event_type(phase))]
        updated = await self._store.set_status(
            row.name,
            uid=row.uid,
            phase=phase,
            reason=reason,
            message=message,
            forks=forks,
            events=events,
            generation=row.generation,
        )
        if updated is not None:
            self._routes.update([updated])


def _event_type(phase: Phase) -> EventType:
    return "Warning" if phase == Phase.FAILED else "Normal"
