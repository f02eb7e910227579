"""Fault counts from the routers, merged so that no report is counted twice.

A router instance reports CUMULATIVE counts per (routing key, fault). The store keeps the
latest per (instance, routing key, fault) and only ever raises it (the greatest of stored and
reported), so a retried, duplicated or reordered report changes nothing, and a sandbox's count
is the sum over instances. A restarted router is a new instance: the old one's rows stay, so
nothing it had reported is lost, until its lease ends and `sandboxd.store.retire` folds them
into the `RETIRED` rows. Rows exist only for live sandboxes and the faults of their current
spec (anything else is ignored, not stored), and go when the sandbox is deleted.

Every write to a sandbox's rows happens under its row lock (`SandboxRow`, FOR UPDATE), and
every report of an instance under its lease's lock (`RouterInstanceRow`), taken first: so a
report and the retirement of its instance never interleave, and neither deadlocks with the
other nor with a delete.

These functions run inside a `Store` transaction; the `Store` wraps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, func
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from sandboxd.core.clock import utcnow
from sandboxd.core.phases import LIVE
from sandboxd.core.records import Event
from sandboxd.store.tables import (
    FaultCountRow,
    RetiredCountRow,
    RouterInstanceRow,
    SandboxRow,
)

MAX_INSTANCES = 256
"""Router instances with counts kept at once. A router restart is a new instance and its old
rows stay until their sandboxes go or its lease ends; past this a new instance is refused (429)
and retries."""
_COLUMNS = (
    col(FaultCountRow.matched),
    col(FaultCountRow.injected),
    col(FaultCountRow.unread),
    col(FaultCountRow.unrewritten),
)
RETIRED = "~retired"
"""The instance holding the folded counts of retired ones: no router can be called that (the
API's instance pattern has no `~`)."""


@dataclass(frozen=True, slots=True)
class Counts:
    matched: int = 0
    injected: int = 0
    unread: int = 0
    """Requests a fault needing the JSON-RPC method could not match: body over the limit."""
    unrewritten: int = 0
    """Firings of a rewriting fault whose response was too large to rewrite."""

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))


@dataclass(frozen=True, slots=True)
class Reported:
    """One entry of a router's report: cumulative counts since the instance started."""

    sandbox: str
    routing_key: str
    fault: str
    counts: Counts


@dataclass(frozen=True, slots=True)
class Folded:
    """Counts folded for a retired instance: what it must no longer report as its own."""

    routing_key: str
    fault: str
    counts: Counts


@dataclass(slots=True)
class Merged:
    accepted: int = 0
    ignored: int = 0
    refused: bool = False
    """True when the instance is new and `MAX_INSTANCES` are kept already: nothing stored."""
    retired: list[Folded] | None = None
    """Set when the instance is retired (nothing stored): what was folded for it."""
    events: list[tuple[SandboxRow, Event]] = field(default_factory=list)


def merge(session: Session, *, instance: str, entries: Sequence[Reported]) -> Merged:
    """Raise the instance's stored counts to the reported ones and renew its lease; the
    `FaultInjected` events to record (a fault's summed `injected` leaving 0). The sandboxes
    concerned are locked, so two reports for one sandbox see each other's sums and the event
    is recorded once. A retired instance stores nothing and is told what was folded for it."""
    lease = session.get(RouterInstanceRow, instance, with_for_update=True)
    if lease is None:
        folded = retired(session, instance)
        if folded:
            return Merged(retired=folded)
    keys = sorted({e.routing_key for e in entries})
    live = [p.value for p in LIVE]
    rows = session.exec(
        select(SandboxRow)
        .where(col(SandboxRow.routing_key).in_(keys), col(SandboxRow.phase).in_(live))
        .order_by(col(SandboxRow.name))
        .with_for_update()
    ).all()
    sandboxes = {row.routing_key: row for row in rows}
    wanted = [e for e in entries if _belongs(e, sandboxes.get(e.routing_key))]
    merged = Merged(ignored=len(entries) - len(wanted))
    if lease is not None:
        lease.seen_at = utcnow()
    elif not wanted:
        return merged  # nothing to keep: a lease only for an instance with counts
    elif _refuse(session):
        return Merged(refused=True)
    else:
        _take_lease(session, instance)
    before = _sums(session, list(sandboxes))
    mine = _instance_rows(session, instance=instance, keys=list(sandboxes))
    for entry in wanted:
        _raise(session, mine, instance=instance, entry=entry)
        merged.accepted += 1
    session.flush()
    after = _sums(session, list(sandboxes))
    for (key, fault), counts in after.items():
        if counts.injected > 0 and before.get((key, fault), Counts()).injected == 0:
            merged.events.append((sandboxes[key], _first_injection(sandboxes[key], fault)))
    return merged


def sums(session: Session, keys: Sequence[str]) -> dict[str, dict[str, Counts]]:
    """Per routing key, per fault id: the counts summed over router instances."""
    by_key: dict[str, dict[str, Counts]] = {}
    for (key, fault), counts in _sums(session, keys).items():
        by_key.setdefault(key, {})[fault] = counts
    return by_key


def retired(session: Session, instance: str) -> list[Folded]:
    """What was folded for `instance`, if it was retired (empty otherwise)."""
    query = select(RetiredCountRow).where(RetiredCountRow.instance == instance)
    return [
        Folded(row.routing_key, row.fault, counts_of(row))
        for row in session.exec(query.order_by(col(RetiredCountRow.routing_key))).all()
    ]


def forget(session: Session, *, routing_key: str) -> None:
    """A deleted sandbox's counts, folded ones included (called under its row lock)."""
    session.execute(delete(FaultCountRow).where(col(FaultCountRow.routing_key) == routing_key))
    session.execute(delete(RetiredCountRow).where(col(RetiredCountRow.routing_key) == routing_key))


def counts_of(row: FaultCountRow | RetiredCountRow) -> Counts:
    return Counts(row.matched, row.injected, row.unread, row.unrewritten)


def new_row(instance: str, routing_key: str, fault: str, counts: Counts) -> FaultCountRow:
    return FaultCountRow(
        instance=instance,
        routing_key=routing_key,
        fault=fault,
        matched=counts.matched,
        injected=counts.injected,
        unread=counts.unread,
        unrewritten=counts.unrewritten,
        updated_at=utcnow(),
    )


def set_counts(row: FaultCountRow, counts: Counts) -> None:
    row.matched, row.injected = counts.matched, counts.injected
    row.unread, row.unrewritten = counts.unread, counts.unrewritten
    row.updated_at = utcnow()


def _values(counts: Counts) -> tuple[int, int, int, int]:
    return counts.matched, counts.injected, counts.unread, counts.unrewritten


def _belongs(entry: Reported, row: SandboxRow | None) -> bool:
    """A live sandbox of that name and key, whose spec has that fault now (a report can trail a
    change: counts of a fault just removed are dropped, not kept for a fault no one sees)."""
    if row is None or row.name != entry.sandbox:
        return False
    return any(fault.id == entry.fault for fault in row.spec.faults)


def _refuse(session: Session) -> bool:
    """Whether a new instance would pass the cap; the folded rows are not an instance."""
    instances = func.count(func.distinct(FaultCountRow.instance))
    count = session.exec(select(instances).where(FaultCountRow.instance != RETIRED)).one()
    return int(count) >= MAX_INSTANCES


def _take_lease(session: Session, instance: str) -> None:
    """A new instance's lease. Two first reports of one instance can race (a retry after a
    timeout): the second finds the row and keeps it, rather than failing on the key."""
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgres_insert
    statement = insert(RouterInstanceRow).values(instance=instance, seen_at=utcnow())
    session.execute(statement.on_conflict_do_nothing(index_elements=["instance"]))


def _sums(session: Session, keys: Sequence[str]) -> dict[tuple[str, str], Counts]:
    if not keys:
        return {}
    sums = [func.sum(c) for c in _COLUMNS]
    query = (
        sa_select(col(FaultCountRow.routing_key), col(FaultCountRow.fault), *sums)
        .where(col(FaultCountRow.routing_key).in_(keys))
        .group_by(col(FaultCountRow.routing_key), col(FaultCountRow.fault))
    )
    return {(k, f): Counts(*map(int, c)) for k, f, *c in session.execute(query).all()}


def _instance_rows(
    session: Session, *, instance: str, keys: Sequence[str]
) -> dict[tuple[str, str], FaultCountRow]:
    query = select(FaultCountRow).where(
        FaultCountRow.instance == instance, col(FaultCountRow.routing_key).in_(keys)
    )
    return {(row.routing_key, row.fault): row for row in session.exec(query).all()}


def _raise(
    session: Session,
    mine: dict[tuple[str, str], FaultCountRow],
    *,
    instance: str,
    entry: Reported,
) -> None:
    row = mine.get((entry.routing_key, entry.fault))
    if row is None:
        row = new_row(instance, entry.routing_key, entry.fault, entry.counts)
        session.add(row)
        mine[(entry.routing_key, entry.fault)] = row
        return
    stored = _values(counts_of(row))
    greatest = Counts(*map(max, zip(stored, _values(entry.counts), strict=True)))
    if _values(greatest) != stored:
        set_counts(row, greatest)


def _first_injection(row: SandboxRow, fault_id: str) -> Event:
    fault = next(f for f in row.spec.faults if f.id == fault_id)
    return Event(
        "FaultInjected",
        f"fault {fault_id} ({fault.kind.value} on {fault.service}) injected for the first time",
    )
