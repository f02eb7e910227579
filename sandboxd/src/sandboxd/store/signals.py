"""Signals from the routers (issue 13): metric buckets and request records, stored so that a
retried or reordered post changes nothing and a control-plane restart loses nothing.

- A bucket is keyed (routing key, start, service, instance) and replaces the stored one when it
  holds at least as many requests (a router re-sends its open bucket as it fills; an older copy
  never overwrites a newer one).
- A request record is keyed (instance, seq) and inserted once (a repeat is ignored).
- Entries of no live sandbox (matched by name AND routing key) are ignored; baseline buckets
  (routing key "") are always kept. A sandbox deleted while a post is in flight can leave rows
  behind: `prune` removes them at the next sweep (`forget` at the delete takes the rest).
- `prune` also keeps the window's worth of buckets (`BUCKETS_KEPT`) and the newest
  `RECORDS_KEPT` records per sandbox.

Writes are one statement per table per post (executemany), inside the caller's transaction.

What a metrics call reads comes back as one row per query, its rows joined by the database
(`aggregate_strings`): one result row and one JSON parse for a window of some 90 buckets,
instead of a row object and a parse per bucket.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from sqlalchemy import String, Table, and_, bindparam, cast, delete, func, select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, SQLModel, col

from sandboxd.core.phases import LIVE, Phase
from sandboxd.core.signals import Side, sides
from sandboxd.store.tables import RequestRecordRow, SandboxRow, SignalBucketRow

BUCKETS_KEPT = 3600
"""Seconds of buckets kept: the longest window the API serves."""
MAX_WIDTH = 60
"""The widest bucket accepted (seconds): a window's query reaches back this much further."""
RECORDS_KEPT = 1000
"""Request records kept per sandbox (the newest, by start; more may wait for `prune`)."""
PRUNE_EVERY = 60.0
"""Seconds between two `prune` passes (the sweep runs every 10 s by default)."""
BASELINE = ""
_BUCKETS: Table = SQLModel.metadata.tables[SignalBucketRow.__tablename__]
_RECORDS: Table = SQLModel.metadata.tables[RequestRecordRow.__tablename__]


class BucketIn(NamedTuple):
    """A posted bucket, ready to store."""

    sandbox: str
    routing_key: str
    service: str
    start: int
    width: int
    requests: int
    data: str
    """The bucket as JSON text."""


class RecordIn(NamedTuple):
    sandbox: str
    routing_key: str
    seq: int
    service: str
    start: float
    status: int
    error: str | None
    trace_id: str | None
    data: str
    """The record as JSON text."""


@dataclass(frozen=True, slots=True)
class Stored:
    accepted: int
    ignored: int


def store(
    session: Session, *, instance: str, buckets: Sequence[BucketIn], records: Sequence[RecordIn]
) -> Stored:
    """One post: the entries of live sandboxes (and the baseline's buckets) written."""
    keys = {b.routing_key for b in buckets} | {r.routing_key for r in records}
    live = _live(session, keys - {BASELINE})
    kept_buckets = [b for b in buckets if _belongs(b.sandbox, b.routing_key, live)]
    kept_records = [r for r in records if r.sandbox and _belongs(r.sandbox, r.routing_key, live)]
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgres_insert
    if kept_buckets:
        upsert = insert(_BUCKETS)
        upsert = upsert.on_conflict_do_update(
            index_elements=["routing_key", "start", "service", "instance"],
            set_={
                "width": upsert.excluded.width,
                "requests": upsert.excluded.requests,
                "data": upsert.excluded.data,
            },
            where=_BUCKETS.c.requests <= upsert.excluded.requests,
        )
        session.execute(upsert, [_bucket_row(instance, b) for b in kept_buckets])
    if kept_records:
        once = insert(_RECORDS).on_conflict_do_nothing(index_elements=["instance", "seq"])
        session.execute(once, [_record_row(instance, r) for r in kept_records])
    accepted = len(kept_buckets) + len(kept_records)
    return Stored(accepted, len(buckets) + len(records) - accepted)


def _in_window() -> tuple[Any, ...]:
    """The buckets of routing key `:key` that reach past `:since` (`:reach` is `since` less
    `MAX_WIDTH`: the index's range; the last condition is exact)."""
    c = _BUCKETS.c
    return (
        c.routing_key == bindparam("key"),
        c.start > bindparam("reach"),
        c.start + c.width > bindparam("since"),
    )


def _window_params(routing_key: str, since: float) -> dict[str, Any]:
    return {"key": routing_key, "reach": since - MAX_WIDTH, "since": since}


_WINDOW = select(
    func.aggregate_strings(_BUCKETS.c.service, " "), func.aggregate_strings(_BUCKETS.c.data, ",")
).where(*_in_window())
"""Built once: a metrics call runs it, and building a statement costs more than running it."""
_START, _REQUESTS = cast(_BUCKETS.c.start, String), cast(_BUCKETS.c.requests, String)
_INDEX = select(
    func.aggregate_strings(
        _BUCKETS.c.service + " " + _START + " " + _BUCKETS.c.instance + " " + _REQUESTS, "\n"
    )
).where(*_in_window())


def window(session: Session, *, routing_key: str, since: float) -> list[tuple[str, Any]]:
    """(service, data) of the key's buckets that reach past `since`: one range of the key,
    read as one row (see the module's docstring). The two aggregates of one query see its
    rows in the same order, and a service's name holds no space (`Token`)."""
    services, data = session.execute(_WINDOW, _window_params(routing_key, since)).one()
    if not services:
        return []
    return list(zip(services.split(" "), orjson.loads(f"[{data}]"), strict=True))


def baseline_index(session: Session, *, since: float) -> tuple[tuple[str, int, str, int], ...]:
    """What identifies the baseline's buckets in the window, without their data: (service,
    start, instance, requests), sorted. While it is unchanged, so is the baseline's side.
    Read as one row: services and instances hold no spaces (`Token`, `Key`)."""
    joined = session.execute(_INDEX, _window_params(BASELINE, since)).scalar()
    found = (row.split(" ") for row in joined.split("\n")) if joined else ()
    return tuple(sorted((s, int(t), i, int(r)) for s, t, i, r in found))


Ident = tuple[str, int, str, int]
"""A baseline bucket's identity: (service, start, instance, requests). A router re-sends a
bucket only with more requests in it, so a bucket with the same identity has the same data."""


class BaselineCache:
    """The baseline's decoded buckets, and its merged sides for the last few windows: every
    sandbox's metrics compare against the same baseline, whose buckets hold the most samples
    (a full reservoir per router instance and service). When the window moves or a router
    re-sends an open bucket, only the buckets not seen yet are read and decoded.

    Merging them again still costs tens of milliseconds (some 100,000 samples): `refresh`
    does it ahead of the harnesses' calls, for the windows they asked for lately, inside the
    transaction of a post of baseline buckets (before its commit: no call sees the post
    before its side is ready) and every second (the window moves past a bucket every 10 s)."""

    SIDES = 8
    WANTED = 3
    """Windows kept ready at most (each merged as of now and a second later: 2 sides each):
    a client asking for many windows makes the calls that follow merge, not every refresh."""
    WANTED_FOR = 120.0
    """Seconds a window asked for is kept ready after the last call that asked."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        """Held by every merge (`_baseline_sides`): the store's threads share the cache."""
        self.asking = threading.Lock()
        """Held while `wanted` changes (microseconds): a call whose side is ready never waits
        for another's merge."""
        self.buckets: dict[Ident, Mapping[str, Any]] = {}
        self.wanted: dict[tuple[int, bool], float] = {}
        """(window seconds, exclude_injected) → when last asked for (epoch seconds)."""
        self._sides: dict[tuple[tuple[Ident, ...], bool], dict[str, Side]] = {}

    def get(self, index: tuple[Ident, ...], exclude_injected: bool) -> dict[str, Side] | None:
        """Without the lock too: one lookup of a dict the lock's holder changes by single
        operations, and a side is complete (merged, prepared) before it is put."""
        return self._sides.get((index, exclude_injected))

    def put(self, index: tuple[Ident, ...], exclude_injected: bool, sides: dict[str, Side]) -> None:
        while len(self._sides) >= self.SIDES:  # the oldest first: dicts keep insertion order
            self._sides.pop(next(iter(self._sides)), None)
        self._sides[(index, exclude_injected)] = sides
        kept = {ident for index, _ in self._sides for ident in index}
        for ident in [i for i in self.buckets if i not in kept]:
            del self.buckets[ident]


def baseline_sides(
    session: Session, cache: BaselineCache, *, now: float, window: int, exclude_injected: bool
) -> dict[str, Side]:
    """The baseline's side per service over the `window` seconds up to `now`, through
    `cache`."""
    with cache.asking:
        cache.wanted[(window, exclude_injected)] = now
        if len(cache.wanted) > cache.WANTED:  # the longest unasked goes: refresh stays bounded
            del cache.wanted[min(cache.wanted, key=cache.wanted.__getitem__)]
    ready = cache.get(baseline_index(session, since=now - window), exclude_injected)
    if ready is not None:  # (merged whole under the lock before it was put)
        return ready
    with cache.lock:
        return _baseline_sides(
            session, cache, since=now - window, exclude_injected=exclude_injected
        )


def refresh(session: Session, cache: BaselineCache, *, now: float) -> None:
    """The baseline's sides of the windows asked for lately made ready, as of `now` and of
    a second later (when the window may have moved past a bucket). The lock is taken for
    one merge at a time: a harness's call waits for one merge at most, not for all."""
    with cache.asking:
        for wanted, asked in list(cache.wanted.items()):
            if now - asked > cache.WANTED_FOR:
                del cache.wanted[wanted]
        windows = list(cache.wanted)
    for (window, exclude_injected), at in itertools.product(windows, (now, now + 1.0)):
        with cache.lock:
            _baseline_sides(session, cache, since=at - window, exclude_injected=exclude_injected)


def _baseline_sides(
    session: Session, cache: BaselineCache, *, since: float, exclude_injected: bool
) -> dict[str, Side]:
    index = baseline_index(session, since=since)
    found = cache.get(index, exclude_injected)
    if found is not None:
        return found
    missing = [ident for ident in index if ident not in cache.buckets]
    if missing:
        oldest = min(start for _, start, _, _ in missing)
        columns = (_BUCKETS.c.service, _BUCKETS.c.start, _BUCKETS.c.instance,
                   _BUCKETS.c.requests, _BUCKETS.c.data)  # fmt: skip
        query = select(*columns).where(
            _BUCKETS.c.routing_key == BASELINE, _BUCKETS.c.start >= oldest
        )
        for service, start, instance, requests, data in session.execute(query).all():
            ident = (service, int(start), instance, int(requests))
            cache.buckets[ident] = _untracked(orjson.loads(data))
    rows = [(ident[0], cache.buckets[ident]) for ident in index if ident in cache.buckets]
    merged = sides(rows, exclude_injected=exclude_injected)
    for side in merged.values():
        side.sample().prepare()  # compared with every sandbox's: count its ties once, here
    cache.put(index, exclude_injected, merged)
    return merged


def _untracked(bucket: dict[str, Any]) -> dict[str, Any]:
    """The bucket with its samples in tuples, which the cyclic collector stops tracking (it
    walks a list's every item on each full pass): the cache keeps some 100,000 samples."""
    for key in ("latencyMs", "injectedLatencyMs"):
        if key in bucket:
            bucket[key] = tuple(bucket[key])
    return bucket


@dataclass(frozen=True, slots=True)
class RecordFilter:
    service: str | None = None
    status: tuple[int, int] | None = None
    """Inclusive range of statuses."""
    error: str | None = None
    trace_id: str | None = None


def records(
    session: Session, *, routing_key: str, where: RecordFilter, limit: int
) -> list[Mapping[str, Any]]:
    """The sandbox's newest records matching `where`, newest first."""
    query = select(_RECORDS.c.data).where(_RECORDS.c.routing_key == routing_key)
    if where.service is not None:
        query = query.where(_RECORDS.c.service == where.service)
    if where.status is not None:
        query = query.where(_RECORDS.c.status.between(*where.status))
    if where.error is not None:
        query = query.where(_RECORDS.c.error == where.error)
    if where.trace_id is not None:
        query = query.where(_RECORDS.c.trace_id == where.trace_id)
    query = query.order_by(_RECORDS.c.start.desc(), _RECORDS.c.instance, _RECORDS.c.seq.desc())
    return [orjson.loads(row) for (row,) in session.execute(query.limit(limit)).all()]


def traced(
    session: Session, *, routing_key: str, limit: int, trace_id: str | None
) -> list[Mapping[str, Any]]:
    """The records of the sandbox's `limit` newest traces (or of one trace)."""
    mine = _RECORDS.c.routing_key == routing_key
    if trace_id is not None:
        ids = [trace_id]
    else:
        newest = (
            select(_RECORDS.c.trace_id)
            .where(mine, _RECORDS.c.trace_id.is_not(None))
            .group_by(_RECORDS.c.trace_id)
            .order_by(func.max(_RECORDS.c.start).desc())
            .limit(limit)
        )
        ids = [i for (i,) in session.execute(newest).all()]
    if not ids:
        return []
    query = select(_RECORDS.c.data).where(mine, _RECORDS.c.trace_id.in_(ids))
    return [orjson.loads(row) for (row,) in session.execute(query).all()]


def forget(session: Session, *, routing_key: str) -> None:
    """A deleted sandbox's buckets and records."""
    session.execute(delete(_BUCKETS).where(_BUCKETS.c.routing_key == routing_key))
    session.execute(delete(_RECORDS).where(_RECORDS.c.routing_key == routing_key))


def expire(session: Session, *, now: float) -> None:
    """Buckets past the longest window (a range of the `start` index: cheap every sweep)."""
    session.execute(delete(_BUCKETS).where(_BUCKETS.c.start <= now - BUCKETS_KEPT - MAX_WIDTH))


def prune(session: Session) -> None:
    """Rows of sandboxes gone (a post that raced a delete), and records beyond the newest
    `RECORDS_KEPT` of each sandbox (ties at the cut's start are kept). Both walk whole
    indexes, so the store runs this less often than `expire` (`PRUNE_EVERY`)."""
    present = select(col(SandboxRow.routing_key)).where(col(SandboxRow.phase) != Phase.DELETED)
    for table in (_BUCKETS, _RECORDS):
        gone = and_(table.c.routing_key != BASELINE, table.c.routing_key.not_in(present))
        session.execute(delete(table).where(gone))
    crowded = (
        select(_RECORDS.c.routing_key)
        .group_by(_RECORDS.c.routing_key)
        .having(func.count() > RECORDS_KEPT)
    )
    for (key,) in session.execute(crowded).all():
        cut = (
            select(_RECORDS.c.start)
            .where(_RECORDS.c.routing_key == key)
            .order_by(_RECORDS.c.start.desc())
            .offset(RECORDS_KEPT - 1)
            .limit(1)
            .scalar_subquery()
        )
        session.execute(
            delete(_RECORDS).where(_RECORDS.c.routing_key == key, _RECORDS.c.start < cut)
        )


def _live(session: Session, keys: set[str]) -> dict[str, str]:
    """Routing key → name of the live sandboxes among `keys`."""
    if not keys:
        return {}
    query = select(col(SandboxRow.routing_key), col(SandboxRow.name)).where(
        col(SandboxRow.routing_key).in_(sorted(keys)),
        col(SandboxRow.phase).in_([p.value for p in LIVE]),
    )
    return {key: name for key, name in session.execute(query).all()}


def _belongs(sandbox: str, routing_key: str, live: Mapping[str, str]) -> bool:
    if routing_key == BASELINE:
        return sandbox == ""
    return live.get(routing_key) == sandbox


def _bucket_row(instance: str, bucket: BucketIn) -> dict[str, Any]:
    return {"routing_key": bucket.routing_key, "start": bucket.start, "service": bucket.service,
            "instance": instance, "width": bucket.width, "requests": bucket.requests,
            "data": bucket.data}  # fmt: skip


def _record_row(instance: str, record: RecordIn) -> dict[str, Any]:
    return {"instance": instance, "seq": record.seq, "routing_key": record.routing_key,
            "service": record.service, "start": record.start, "status": record.status,
            "error": record.error, "trace_id": record.trace_id, "data": record.data}  # fmt: skip
