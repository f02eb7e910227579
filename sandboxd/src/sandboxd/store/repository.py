"""Data functions over the tables: every write is one transaction and records its events.

The API and the reconciler both call this; neither holds a session across an await. Concurrent
creates of one name are serialised by the database itself (primary key on `name`, a row lock on
PostgreSQL, the write lock on SQLite), so exactly one wins and the others see its row.

An `Idempotency-Key` refers to the sandbox it created (name and uid) for `IDEMPOTENCY_KEY_TTL`:
a replay returns that sandbox while it lives, and a 409 once it is deleted, even when the name
holds a new sandbox by then (a harness retrying a create must not be handed someone else's).
The reaper's sweep forgets keys older than that, so keys cannot pile up without end.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

from sqlalchemy import Engine, delete, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from sandboxd.core.clock import rfc3339, utcnow
from sandboxd.core.naming import new_routing_key
from sandboxd.core.phases import LIVE, Phase
from sandboxd.core.records import Event, ForkRecord
from sandboxd.core.signals import Side, sides
from sandboxd.core.spec import SandboxSpec
from sandboxd.core.tokens import Scope
from sandboxd.core.updates import spec_change
from sandboxd.errors import Conflict, Forbidden, InvalidRequest, Unavailable
from sandboxd.store import counts, retire, signals
from sandboxd.store.counts import Counts, Merged, Reported
from sandboxd.store.engine import READ_ONLY, migrate
from sandboxd.store.signals import BucketIn, RecordFilter, RecordIn, Stored
from sandboxd.store.tables import AuditRow, EventRow, IdempotencyRow, SandboxRow, TokenRow

IDEMPOTENCY_KEY_TTL = timedelta(hours=24)
MAX_AUDIT = 100_000
"""API calls the audit log keeps (the newest)."""
AUDIT_PRUNE_EVERY = 1_000
MAX_REPEATED_EVENTS = 100
"""Events of one kind a client can repeat at will (a PATCH records `Updated`, `FaultsChanged`)
kept per sandbox:
the newest; older ones are dropped so the event log and its table stay bounded."""
P = ParamSpec("P")
T = TypeVar("T")


def _off_loop(
    method: Callable[Concatenate[Store, P], T],
) -> Callable[Concatenate[Store, P], Coroutine[Any, Any, T]]:
    """A blocking store method as a coroutine that runs it in a thread: callers await it and
    the event loop never waits on the database."""

    @functools.wraps(method)
    async def call(store: Store, /, *args: P.args, **kwargs: P.kwargs) -> T:
        work = functools.partial(method, store, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(store.threads, work)

    return call


@dataclass(frozen=True, slots=True)
class NewSandbox:
    spec: SandboxSpec
    labels: dict[str, str]
    ttl_seconds: int
    request_hash: str
    idempotency_key: str | None = None
    events: tuple[Event, ...] = ()
    """Recorded after `Created`, in the same transaction (such as `FaultsChanged`)."""
    by: str | None = None
    """The token whose call this is (the events' `by`)."""
    scope: Scope | None = None
    """An apply's caller's scope: a live sandbox outside it is not updated (Forbidden)."""


@dataclass(frozen=True, slots=True)
class Applied:
    """What an apply did: `created`, `updated` (with what changed) or `unchanged`."""

    outcome: Literal["created", "updated", "unchanged"]
    what: tuple[str, ...] = ()


class Store:
    """Every public method is a coroutine; the blocking work runs in a thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._reader = engine.execution_options(**{READ_ONLY: True})
        self._baseline = signals.BaselineCache()
        self._pruned_at = -math.inf
        self.threads = ThreadPoolExecutor(thread_name_prefix="sandboxd-store")
        """The store's own threads: a caller cancelled mid-call (a shutdown) leaves its thread
        running with a connection checked out, and `close` waits for it."""

    async def close(self) -> None:
        """Wait for the calls still running, so that disposing of the engine afterwards
        closes every connection (one still checked out would stay open)."""
        await asyncio.to_thread(self.threads.shutdown, wait=True)

    @contextmanager
    def _tx(self, *, read_only: bool = False) -> Iterator[Session]:
        bind = self._reader if read_only else self.engine
        try:
            with Session(bind, expire_on_commit=False) as session, session.begin():
                yield session
        except OperationalError as e:
            raise Unavailable(f"the database is unavailable: {e.orig}") from e

    @_off_loop
    def migrate(self) -> None:
        """Bring the schema to the newest revision (a no-op when it is there)."""
        migrate(self.engine)

    @_off_loop
    def ping(self) -> None:
        with self._tx(read_only=True) as session:
            session.execute(text("SELECT 1"))

    # tokens ------------------------------------------------------------------------------
    @_off_loop
    def put_token(self, *, name: str, token_hash: str) -> None:
        with self._tx() as session:
            row = session.get(TokenRow, name)
            if row is None:
                session.add(TokenRow(name=name, token_hash=token_hash, created_at=utcnow()))
            elif row.token_hash != token_hash:
                row.token_hash = token_hash
                row.created_at = utcnow()

    @_off_loop
    def create_token(
        self, *, name: str, token_hash: str, scope: str, expires_at: datetime | None
    ) -> TokenRow:
        """A new scoped token; Conflict when the name is taken."""
        try:
            with self._tx() as session:
                if session.get(TokenRow, name) is not None:
                    raise Conflict(f"a token named {name!r} exists; revoke it first")
                row = TokenRow(
                    name=name,
                    token_hash=token_hash,
                    created_at=utcnow(),
                    scope=scope,
                    expires_at=expires_at,
                )
                session.add(row)
                return row
        except IntegrityError as e:  # (a concurrent create of the name, or a hash seen before)
            raise Conflict(f"a token named {name!r} exists; revoke it first") from e

    @_off_loop
    def token(self, token_hash: str) -> TokenRow | None:
        """The token with this hash, looked up on every call of a scoped token, so a
        revocation takes effect on its next request, whichever process made it."""
        with self._tx(read_only=True) as session:
            return session.exec(select(TokenRow).where(TokenRow.token_hash == token_hash)).first()

    @_off_loop
    def token_named(self, name: str) -> TokenRow | None:
        """The token `name`, looked up on every request of a web session it signed in."""
        with self._tx(read_only=True) as session:
            return session.get(TokenRow, name)

    @_off_loop
    def tokens(self) -> list[TokenRow]:
        with self._tx(read_only=True) as session:
            return list(session.exec(select(TokenRow).order_by(TokenRow.name)).all())

    @_off_loop
    def revoke_token(self, name: str) -> bool:
        """Delete the token `name`; False when there is none."""
        with self._tx() as session:
            row = session.get(TokenRow, name)
            if row is None:
                return False
            session.delete(row)
            return True

    # the audit log -----------------------------------------------------------------------
    @_off_loop
    def audit(self, calls: Sequence[AuditRow]) -> None:
        """Append API calls; the oldest beyond `MAX_AUDIT` rows go (checked now and then)."""
        with self._tx() as session:
            session.add_all(calls)
            session.flush()
            newest = calls[-1].id if calls else None
            if newest is not None and newest % AUDIT_PRUNE_EVERY < len(calls):
                session.execute(delete(AuditRow).where(col(AuditRow.id) <= newest - MAX_AUDIT))

    @_off_loop
    def audit_log(self, *, limit: int, before: int | None = None) -> list[AuditRow]:
        """The newest calls first (older than id `before`, when given)."""
        with self._tx(read_only=True) as session:
            query = select(AuditRow)
            if before is not None:
                query = query.where(col(AuditRow.id) < before)
            return list(session.exec(query.order_by(col(AuditRow.id).desc()).limit(limit)).all())

    # sandboxes ---------------------------------------------------------------------------
    @_off_loop
    def create(self, new: NewSandbox) -> tuple[SandboxRow, bool]:
        """The sandbox named in `new.spec`, and whether this call created it."""
        for _ in range(5):
            try:
                return self._create_once(new)
            except IntegrityError:
                continue  # another create won the race: read what it wrote
        raise Conflict("the sandbox is being created concurrently; retry")

    def _create_once(self, new: NewSandbox) -> tuple[SandboxRow, bool]:
        name = new.spec.name
        with self._tx() as session:
            if new.idempotency_key is not None:
                replay = self._replay(session, new)
                if replay is not None:
                    return replay, False
            row = session.exec(
                select(SandboxRow).where(SandboxRow.name == name).with_for_update()
            ).first()
            if row is not None and row.phase != Phase.DELETED:
                if row.spec.canonical() != new.spec.canonical():
                    raise Conflict(
                        f"sandbox {name!r} exists with another spec; PUT applies a new spec "
                        "(`sandbox up` does), or delete it first or use another name",
                        sandbox=name,
                    )
                if row.phase == Phase.TERMINATING:
                    raise Conflict(f"sandbox {name!r} is being deleted; retry", sandbox=name)
                return row, False
            return self._insert(session, row, new), True

    def _insert(self, session: Session, row: SandboxRow | None, new: NewSandbox) -> SandboxRow:
        """A new sandbox named `new.spec.name`, over its tombstone `row` if there is one."""
        name = new.spec.name
        now = utcnow()
        expires_at = now + timedelta(seconds=new.ttl_seconds)
        fields: dict[str, Any] = {
            "uid": uuid.uuid4().hex,
            "routing_key": new_routing_key(),
            "spec": new.spec,
            "labels": new.labels,
            "phase": Phase.PENDING.value,
            "reason": "Created",
            "message": "waiting for the reconciler",
            "forks": [],
            "created_at": now,
            "updated_at": now,
            "expires_at": expires_at,
            "deleted_at": None,
            "generation": 1,
        }
        if row is None:
            row = SandboxRow(name=name, **fields)
            session.add(row)
        else:  # a tombstone: the name is free again
            for key, value in fields.items():
                setattr(row, key, value)
        if new.idempotency_key is not None:
            session.add(
                IdempotencyRow(
                    key=new.idempotency_key,
                    request_hash=new.request_hash,
                    sandbox=name,
                    uid=row.uid,
                    created_at=now,
                )
            )
        created = Event("Created", f"created; expires at {rfc3339(expires_at)}", by=new.by)
        self._event(session, row, created)
        for event in new.events:
            self._event(session, row, event)
        session.flush()
        return row

    @_off_loop
    def apply(self, new: NewSandbox) -> tuple[SandboxRow, Applied]:
        """Create the sandbox named in `new.spec`, or update the live one in place to that spec
        (its routing key, uid and name stay): the sandbox and what this call did."""
        for _ in range(5):
            try:
                return self._apply_once(new)
            except IntegrityError:
                continue  # a concurrent create won the race: update what it wrote
        raise Conflict("the sandbox is being created concurrently; retry")

    def _apply_once(self, new: NewSandbox) -> tuple[SandboxRow, Applied]:
        name = new.spec.name
        with self._tx() as session:
            row = session.exec(
                select(SandboxRow).where(SandboxRow.name == name).with_for_update()
            ).first()
            if row is None or row.phase == Phase.DELETED:
                return self._insert(session, row, new), Applied("created")
            _in_scope(row, new.scope)
            if row.phase == Phase.TERMINATING:
                raise Conflict(f"sandbox {name!r} is being deleted; retry", sandbox=name)
            change = spec_change(row.spec, new.spec)
            if not change:
                return row, Applied("unchanged")
            now = utcnow()
            row.spec, row.labels = new.spec, new.labels
            row.expires_at = now + timedelta(seconds=new.ttl_seconds)
            row.generation += 1
            row.updated_at = now
            what = f"{'; '.join(change.what)}; expires at {rfc3339(row.expires_at)}"
            if change.forks or row.phase == Phase.FAILED:  # (a failed one is tried again)
                row.phase, row.reason = Phase.PENDING.value, "Updated"
                row.message = "applying the new spec"
            events = [Event("Updated", what, by=new.by)]
            if change.faults is not None:
                events.append(Event("FaultsChanged", change.faults, by=new.by))
            for event in events:
                self._event(session, row, event)
                self._drop_repeats(session, row, reason=event.reason)
            return row, Applied("updated", change.what)

    def _replay(self, session: Session, new: NewSandbox) -> SandboxRow | None:
        key = session.get(IdempotencyRow, new.idempotency_key)
        if key is None:
            return None
        if key.created_at <= utcnow() - IDEMPOTENCY_KEY_TTL:
            session.delete(key)  # forgotten: the request counts as new
            session.flush()
            return None
        if key.request_hash != new.request_hash:
            raise InvalidRequest(
                "this Idempotency-Key was used with a different request", error="idempotency_key"
            )
        row = session.get(SandboxRow, key.sandbox)
        if row is None or row.uid != key.uid or row.phase not in LIVE:
            raise Conflict(
                f"the sandbox {key.sandbox!r} this Idempotency-Key created is deleted; send a "
                "new key to create another",
                error="idempotency_key_spent",
                sandbox=key.sandbox,
            )
        return row

    @_off_loop
    def get(self, name: str) -> SandboxRow | None:
        with self._tx(read_only=True) as session:
            return session.get(SandboxRow, name)

    @_off_loop
    def sandboxes(self, *, phases: Sequence[Phase] | None = None) -> list[SandboxRow]:
        wanted = [p.value for p in (phases if phases is not None else LIVE)]
        with self._tx(read_only=True) as session:
            query = select(SandboxRow).where(col(SandboxRow.phase).in_(wanted))
            return list(session.exec(query.order_by(SandboxRow.name)).all())

    @_off_loop
    def update(
        self,
        name: str,
        *,
        spec: SandboxSpec,
        labels: dict[str, str] | None = None,
        expires_at: datetime | None = None,
        events: Sequence[Event] = (),
        generation: int | None = None,
    ) -> SandboxRow | None:
        """Apply a user change (PATCH) to a live sandbox: its new spec, and the labels and
        expiry when they change. None when there is no live sandbox of that name; Conflict
        when `generation` is given and the row has moved past it."""
        with self._tx() as session:
            row = session.get(SandboxRow, name, with_for_update=True)
            if row is None or row.phase not in LIVE:
                return None
            if generation is not None and row.generation != generation:
                raise Conflict(
                    f"sandbox {name!r} changed meanwhile (generation {row.generation}, not "
                    f"{generation}); read it again and retry",
                    error="generation_mismatch",
                    sandbox=name,
                )
            row.spec = spec
            if labels is not None:
                row.labels = labels
            if expires_at is not None:
                row.expires_at = expires_at
            row.generation += 1
            row.updated_at = utcnow()
            for event in events:
                self._event(session, row, event)
                self._drop_repeats(session, row, reason=event.reason)
            return row

    @_off_loop
    def request_delete(
        self, name: str, *, event: Event, scope: Scope | None = None
    ) -> SandboxRow | None:
        """Mark a sandbox Terminating (idempotent). None only when the name was never seen;
        Forbidden when `scope` is given and the sandbox is outside it."""
        with self._tx() as session:
            row = session.get(SandboxRow, name, with_for_update=True)
            if row is None:
                return None
            _in_scope(row, scope)
            if row.phase in LIVE:
                self._transition(session, row, Phase.TERMINATING, event)
            return row

    @_off_loop
    def expire_due(self, *, now: datetime) -> list[str]:
        """Mark every live sandbox whose TTL has passed as Terminating; the names marked."""
        live = [p.value for p in LIVE]
        with self._tx() as session:
            rows = session.exec(
                select(SandboxRow)
                .where(col(SandboxRow.phase).in_(live), SandboxRow.expires_at <= now)
                .with_for_update()
            ).all()
            for row in rows:
                event = Event("Expired", f"the TTL ran out at {rfc3339(row.expires_at)}")
                self._transition(session, row, Phase.TERMINATING, event)
            stale = col(IdempotencyRow.created_at) <= now - IDEMPOTENCY_KEY_TTL
            session.execute(delete(IdempotencyRow).where(stale))
            return [row.name for row in rows]

    @_off_loop
    def set_status(
        self,
        name: str,
        *,
        uid: str,
        phase: Phase,
        reason: str | None,
        message: str | None,
        forks: list[ForkRecord],
        events: Sequence[Event] = (),
        generation: int | None = None,
    ) -> SandboxRow | None:
        """The reconciler's write. Refused (None) when the row is no longer that `uid` or a
        user's delete has overtaken it, so a slow pass never resurrects a deleted sandbox; and
        when `generation` is given and a user's change has moved the row past it, so a pass
        that converged on the old spec never shows it as the new one's status (the change
        kicked another pass)."""
        with self._tx() as session:
            row = session.get(SandboxRow, name, with_for_update=True)
            if row is None or row.uid != uid:
                return None
            if generation is not None and row.generation != generation:
                return None
            if row.phase == Phase.TERMINATING and phase in LIVE:
                return None
            changed = (row.phase, row.reason, row.message, row.forks) != (
                phase.value,
                reason,
                message,
                forks,
            )
            if changed:
                row.phase, row.reason, row.message = phase.value, reason, message
                row.forks = forks
                row.updated_at = utcnow()
                if phase == Phase.DELETED:
                    row.deleted_at = row.updated_at
                    counts.forget(session, routing_key=row.routing_key)
                    signals.forget(session, routing_key=row.routing_key)
            for event in events:
                self._event(session, row, event)
            return row

    @_off_loop
    def events(self, name: str, *, uid: str) -> list[EventRow]:
        with self._tx(read_only=True) as session:
            query = select(EventRow).where(EventRow.sandbox == name, EventRow.uid == uid)
            return list(session.exec(query.order_by(col(EventRow.id))).all())

    # fault counts (sandboxd.store.counts) ------------------------------------------------
    @_off_loop
    def merge_counts(
        self, *, instance: str, entries: Sequence[Reported], lease: timedelta
    ) -> Merged:
        """A router's report merged in one transaction, its `FaultInjected` events with it;
        before, in a transaction of its own, instances silent for `lease` are retired (apart,
        so that each takes its locks in the one order: see `sandboxd.store.retire`)."""
        with self._tx(read_only=True) as session:
            due = retire.due(session, lease=lease, now=utcnow())
        if due:
            with self._tx() as session:
                retire.retire(session, lease=lease, now=utcnow())
        with self._tx() as session:
            merged = counts.merge(session, instance=instance, entries=entries)
            for row, event in merged.events:
                self._event(session, row, event)
            return merged

    @_off_loop
    def fault_counts(self, routing_keys: Sequence[str]) -> dict[str, dict[str, Counts]]:
        with self._tx(read_only=True) as session:
            return counts.sums(session, routing_keys)

    # signals (sandboxd.store.signals) --------------------------------------------------
    @_off_loop
    def store_signals(
        self, *, instance: str, buckets: Sequence[BucketIn], records: Sequence[RecordIn]
    ) -> Stored:
        with self._tx() as session:
            stored = signals.store(session, instance=instance, buckets=buckets, records=records)
            if self._baseline.wanted and any(b.routing_key == signals.BASELINE for b in buckets):
                # Merged before the commit, from this transaction's view: a harness's call
                # that sees the post finds the baseline's side ready instead of waiting for
                # its merge (one made after a rolled-back commit is never asked for).
                signals.refresh(session, self._baseline, now=time.time())
        return stored

    @_off_loop
    def signal_sides(
        self, *, routing_key: str, now: float, window: int, exclude_injected: bool
    ) -> tuple[dict[str, Side], dict[str, Side]]:
        """Per service, the sandbox's side and the baseline's over the `window` seconds up to
        `now`. The baseline's is the same for every sandbox: it is read and merged again only
        when its buckets changed (`BaselineCache`)."""
        with self._tx(read_only=True) as session:
            return self._sides(
                session, routing_key=routing_key, now=now, window=window,
                exclude_injected=exclude_injected,
            )  # fmt: skip

    @_off_loop
    def live_signal_sides(
        self, name: str, *, now: float, window: int, exclude_injected: bool
    ) -> tuple[SandboxRow, dict[str, Side], dict[str, Side]] | None:
        """The live sandbox `name` (None when there is none) and its `signal_sides`, in one
        transaction and one thread hop: under ingest every hop waits for the GIL."""
        with self._tx(read_only=True) as session:
            row = session.get(SandboxRow, name)
            if row is None or row.phase == Phase.DELETED:
                return None
            mine, theirs = self._sides(
                session, routing_key=row.routing_key, now=now, window=window,
                exclude_injected=exclude_injected,
            )  # fmt: skip
        return row, mine, theirs

    def _sides(
        self, session: Session, *, routing_key: str, now: float, window: int,
        exclude_injected: bool,
    ) -> tuple[dict[str, Side], dict[str, Side]]:  # fmt: skip
        rows = signals.window(session, routing_key=routing_key, since=now - window)
        mine = sides(rows, exclude_injected=exclude_injected)
        theirs = signals.baseline_sides(
            session, self._baseline, now=now, window=window, exclude_injected=exclude_injected
        )
        return mine, theirs

    async def keep_baseline_ready(self, *, every: float = 1.0) -> None:
        """Until cancelled: the baseline's sides made ready ahead of the harnesses' calls
        (`BaselineCache`), as their windows move past the buckets."""
        while True:
            with suppress(Unavailable):
                await self._refresh_baseline_off_loop()
            await asyncio.sleep(every)

    @_off_loop
    def _refresh_baseline_off_loop(self) -> None:
        self._refresh_baseline()

    def _refresh_baseline(self) -> None:
        if not self._baseline.wanted:
            return
        with self._tx(read_only=True) as session:
            signals.refresh(session, self._baseline, now=time.time())

    @_off_loop
    def request_records(
        self, *, routing_key: str, where: RecordFilter, limit: int
    ) -> list[Mapping[str, Any]]:
        with self._tx(read_only=True) as session:
            return signals.records(session, routing_key=routing_key, where=where, limit=limit)

    @_off_loop
    def traced_records(
        self, *, routing_key: str, limit: int, trace_id: str | None
    ) -> list[Mapping[str, Any]]:
        with self._tx(read_only=True) as session:
            return signals.traced(session, routing_key=routing_key, limit=limit, trace_id=trace_id)

    @_off_loop
    def prune_signals(self, *, now: float) -> None:
        """Retention of the signals, called by every sweep: old buckets each time, the
        rest (`sandboxd.store.signals.prune`) every `PRUNE_EVERY` seconds."""
        with self._tx() as session:
            signals.expire(session, now=now)
            if now - self._pruned_at >= signals.PRUNE_EVERY:
                signals.prune(session)
                self._pruned_at = now

    @_off_loop
    def record(self, row: SandboxRow, event: Event) -> None:
        with self._tx() as session:
            self._event(session, row, event)

    def _transition(self, session: Session, row: SandboxRow, phase: Phase, event: Event) -> None:
        row.phase, row.reason, row.message = phase.value, event.reason, event.message
        row.updated_at = utcnow()
        self._event(session, row, event)

    @staticmethod
    def _drop_repeats(session: Session, row: SandboxRow, *, reason: str) -> None:
        session.flush()
        same = (
            col(EventRow.sandbox) == row.name,
            col(EventRow.uid) == row.uid,
            col(EventRow.reason) == reason,
        )
        oldest_kept = (
            select(EventRow.id)
            .where(*same)
            .order_by(col(EventRow.id).desc())
            .offset(MAX_REPEATED_EVENTS - 1)
            .limit(1)
            .scalar_subquery()
        )
        session.execute(delete(EventRow).where(*same, col(EventRow.id) < oldest_kept))

    @staticmethod
    def _event(session: Session, row: SandboxRow, event: Event) -> None:
        session.add(
            EventRow(
                sandbox=row.name,
                uid=row.uid,
                time=utcnow(),
                type=event.type,
                reason=event.reason,
                message=event.message[:2048],
                by=event.by,
            )
        )


def _in_scope(row: SandboxRow, scope: Scope | None) -> None:
    """Forbidden when a scoped token's call reaches a sandbox outside its scope (checked in
    the transaction that changes it)."""
    if scope is not None and not scope.holds(row.labels):
        raise Forbidden(f"sandbox {row.name!r} is not labelled {scope}", sandbox=row.name)
