"""Router instances whose lease ended, folded so that they no longer fill `MAX_INSTANCES`.

A router reports at least every 30 s (an empty report renews its lease). An instance silent for
longer than the lease is retired: its rows are added into the `RETIRED` rows of the same
(routing key, fault), so every sandbox's sum is unchanged, and the values folded are kept in
`retired_counts` for `RETIRED_KEPT`. If the instance was only cut off and reports again, it is
refused (409 `instance_retired`) with those values; the router takes a new instance id and
reports its counters minus them, so the fold plus the new instance is exactly what it counted.
An instance that comes back after `RETIRED_KEPT` would count its folded values twice: a router
cut off from its control plane for a day is the limit of the scheme.

Locks, in the order every writer takes them: the instances' leases (here SKIP LOCKED, so a
pass never waits on a report, and an instance reporting right now is not retired), then the
sandboxes concerned (sorted by name, as `counts.merge` and deletes do). A report of an instance
being retired waits on its lease, then finds it gone and the folded values written.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import Session, col, select

from sandboxd.store.counts import RETIRED, counts_of, new_row, set_counts
from sandboxd.store.tables import FaultCountRow, RetiredCountRow, RouterInstanceRow, SandboxRow

RETIRED_KEPT = timedelta(hours=24)
"""How long the values folded for a retired instance are kept, to be given back."""
BATCH = 32
"""Instances retired per pass; a pass runs before every report, so a backlog drains fast."""


def due(session: Session, *, lease: timedelta, now: datetime) -> bool:
    """Whether `retire` has anything to do: read first, so that most reports, when nothing is
    due, take no write lock for it (SQLite has one for the whole database)."""
    stale = select(RouterInstanceRow.instance).where(col(RouterInstanceRow.seen_at) < now - lease)
    expired = select(RetiredCountRow.instance).where(
        col(RetiredCountRow.retired_at) < now - RETIRED_KEPT
    )
    return any(session.exec(query.limit(1)).first() is not None for query in (stale, expired))


def retire(session: Session, *, lease: timedelta, now: datetime) -> list[str]:
    """Fold the instances silent for longer than `lease`; the ids retired."""
    session.execute(
        delete(RetiredCountRow).where(col(RetiredCountRow.retired_at) < now - RETIRED_KEPT)
    )
    stale = session.exec(
        select(RouterInstanceRow)
        .where(col(RouterInstanceRow.seen_at) < now - lease)
        .order_by(col(RouterInstanceRow.seen_at))
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    if not stale:
        return []
    ids = [row.instance for row in stale]
    _lock_sandboxes(session, ids)
    rows = session.exec(select(FaultCountRow).where(col(FaultCountRow.instance).in_(ids))).all()
    _fold(session, rows, now=now)
    for lease_row in stale:
        session.delete(lease_row)
    return ids


def _lock_sandboxes(session: Session, instances: Sequence[str]) -> None:
    """The sandboxes whose rows are about to move: a delete (`counts.forget`) or a report of
    another instance for them waits, and the rows read next are the committed ones."""
    keys = select(FaultCountRow.routing_key).where(col(FaultCountRow.instance).in_(instances))
    session.exec(
        select(SandboxRow.name)
        .where(col(SandboxRow.routing_key).in_(keys.distinct()))
        .order_by(col(SandboxRow.name))
        .with_for_update()
    ).all()


def _fold(session: Session, rows: Sequence[FaultCountRow], *, now: datetime) -> None:
    keys = sorted({row.routing_key for row in rows})
    query = select(FaultCountRow).where(
        FaultCountRow.instance == RETIRED, col(FaultCountRow.routing_key).in_(keys)
    )
    folded = {(r.routing_key, r.fault): r for r in session.exec(query).all()}
    for row in rows:
        counts = counts_of(row)
        total = folded.get((row.routing_key, row.fault))
        if total is None:
            total = new_row(RETIRED, row.routing_key, row.fault, counts)
            folded[(row.routing_key, row.fault)] = total
            session.add(total)
        else:
            set_counts(total, counts_of(total) + counts)
        session.add(_kept(row, now=now))
        session.delete(row)


def _kept(row: FaultCountRow, *, now: datetime) -> RetiredCountRow:
    return RetiredCountRow(
        instance=row.instance,
        routing_key=row.routing_key,
        fault=row.fault,
        matched=row.matched,
        injected=row.injected,
        unread=row.unread,
        unrewritten=row.unrewritten,
        retired_at=now,
    )
