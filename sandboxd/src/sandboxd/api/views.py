"""Rows as the API shows them."""

from __future__ import annotations

from sandboxd.api.schemas import EventOut, ForkOut, SandboxOut
from sandboxd.core.duration import parse_duration
from sandboxd.core.naming import baggage_member
from sandboxd.core.phases import Phase
from sandboxd.store.clock import rfc3339
from sandboxd.store.tables import EventRow, SandboxRow


def sandbox_view(row: SandboxRow, *, base_url: str, baggage_key: str) -> SandboxOut:
    self_url = f"{base_url}/v1/sandboxes/{row.name}"
    ttl = parse_duration(row.spec["ttl"])
    return SandboxOut(
        name=row.name,
        uid=row.uid,
        routing_key=row.routing_key,
        baggage=baggage_member(baggage_key, row.routing_key),
        phase=row.phase,
        ready=row.phase == Phase.READY,
        reason=row.reason,
        message=row.message,
        labels=row.labels,
        spec=row.spec,
        created_at=rfc3339(row.created_at),
        updated_at=rfc3339(row.updated_at),
        expires_at=rfc3339(row.expires_at),
        deleted_at=rfc3339(row.deleted_at) if row.deleted_at else None,
        ttl_seconds=ttl,
        forks=[ForkOut.model_validate(f) for f in row.forks],
        faults=list(row.spec.get("faults", [])),
        links={
            "self": self_url,
            "events": f"{self_url}/events",
        },
    )


def event_view(row: EventRow) -> EventOut:
    return EventOut(time=rfc3339(row.time), type=row.type, reason=row.reason, message=row.message)
