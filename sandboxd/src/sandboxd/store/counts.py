"""Fault counts from the routers, merged so that no report is counted twice.

A router instance reports CUMULATIVE counts per (routing key, fault). The store keeps the
latest per (instance, routing key, fault) and only ever raises it (the greatest of stored and
reported), so a retried, duplicated or reordered report changes nothing, and a sandbox's count
is the sum over instances. A restarted router is a new instance: the old one's rows stay, so
nothing it had reported is lost. Rows exist only for live sandboxes and the faults of their
current spec (anything else is ignored, not stored), and go when the sandbox is deleted.

These functions run inside a `Store` transaction; the `Store` wraps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from sandboxd.core.clock import utcnow
from sandboxd.core.phases import LIVE
from sandboxd.core.records import Event
from sandboxd.store.tables import FaultCountRow, SandboxRow

MAX_INSTANCES = 256
"""Router instances with counts kept at once. A router restart is a new instance and its old
rows stay until their sandboxes go; past this a new instance is refused (429) and retries."""


@dataclass(frozen=True, slots=True)
class Reported:
    """One entry of a router's report: cumulative counts since the instance started."""

    sandbox: str
    routing_key: str
    fault: str
    matched: int
    injected: int


@dataclass(frozen=True, slots=True)
class Counts:
    matched: int = 0
    injected: int = 0


@dataclass(slots=True)
class Merged:
    accepted: int = 0
    ignored: int = 0
    refused: bool = False
    """True when the instance is new and `MAX_INSTANCES` are kept already: nothing stored."""
    events: list[tuple[SandboxRow, Event]] = field(default_factory=list)


def merge(session: Session, *, instance: str, entries: Sequence[Reported]) -> Merged:
    """Raise the instance's stored counts to the reported ones; the `FaultInjected` events to
    record (a fault's summed `injected` leaving 0). The sandboxes concerned are locked, so two
    reports for one sandbox see each other's sums and the event is recorded once."""
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
    if wanted and _refuse(session, instance):
        return Merged(refused=True)
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


def forget(session: Session, *, routing_key: str) -> None:
    session.execute(delete(FaultCountRow).where(col(FaultCountRow.routing_key) == routing_key))


def _belongs(entry: Reported, row: SandboxRow | None) -> bool:
    """A live sandbox of that name and key, whose spec has that fault now (a report can trail a
    change: counts of a fault just removed are dropped, not kept for a fault no one sees)."""
    if row is None or row.name != entry.sandbox:
        return False
    return any(fault.id == entry.fault for fault in row.spec.faults)


def _refuse(session: Session, instance: str) -> bool:
    known = session.exec(
        select(FaultCountRow.instance).where(FaultCountRow.instance == instance).limit(1)
    ).first()
    if known is not None:
        return False
    count = session.exec(select(func.count(func.distinct(FaultCountRow.instance)))).one()
    return int(count) >= MAX_INSTANCES


def _sums(session: Session, keys: Sequence[str]) -> dict[tuple[str, str], Counts]:
    if not keys:
        return {}
    query = (
        select(
            FaultCountRow.routing_key,
            FaultCountRow.fault,
            func.sum(FaultCountRow.matched),
            func.sum(FaultCountRow.injected),
        )
        .where(col(FaultCountRow.routing_key).in_(keys))
        .group_by(col(FaultCountRow.routing_key), col(FaultCountRow.fault))
    )
    return {(k, f): Counts(int(m), int(i)) for k, f, m, i in session.exec(query).all()}


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
        row = FaultCountRow(
            instance=instance,
            routing_key=entry.routing_key,
            fault=entry.fault,
            matched=entry.matched,
            injected=entry.injected,
            updated_at=utcnow(),
        )
        session.add(row)
        mine[(entry.routing_key, entry.fault)] = row
    elif entry.matched > row.matched or entry.injected > row.injected:
        row.matched = max(row.matched, entry.matched)
        row.injected = max(row.injected, entry.injected)
        row.updated_at = utcnow()


def _first_injection(row: SandboxRow, fault_id: str) -> Event:
    fault = next(f for f in row.spec.faults if f.id == fault_id)
    return Event(
        "FaultInjected",
        f"fault {fault_id} ({fault.kind.value} on {fault.service}) injected for the first time",
    )
