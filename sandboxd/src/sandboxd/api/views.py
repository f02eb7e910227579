"""Rows as the API shows them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandboxd.api.schemas import EventOut, SandboxOut
from sandboxd.core.capability import mint_view, view_expiry
from sandboxd.core.clock import rfc3339
from sandboxd.core.fault_spec import FaultSpec
from sandboxd.core.naming import baggage_member
from sandboxd.core.phases import LIVE, Phase
from sandboxd.core.preview import preview_token, preview_url
from sandboxd.store.counts import Counts
from sandboxd.store.tables import EventRow, SandboxRow

NO_COUNTS: Mapping[str, Counts] = {}
NO_LINKS: Mapping[str, str] = {}


def sandbox_view(
    row: SandboxRow,
    *,
    base_url: str,
    baggage_key: str,
    counts: Mapping[str, Counts] = NO_COUNTS,
    page: str | None = None,
    previews: Mapping[str, str] = NO_LINKS,
) -> SandboxOut:
    """`counts`: per fault id, summed over the routers' reports (`sandboxd.store.counts`);
    `page`: the web page's link (`page_link`), shown as `links.page`; `previews`: the
    preview links by service (`preview_links`), shown as `links["preview:<service>"]`."""
    self_url = f"{base_url}/v1/sandboxes/{row.name}"
    links = {"self": self_url, "events": f"{self_url}/events"}
    if page is not None:
        links["page"] = page
    for service, url in previews.items():
        links[f"preview:{service}"] = url
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
        spec=row.spec.canonical(),
        created_at=rfc3339(row.created_at),
        updated_at=rfc3339(row.updated_at),
        expires_at=rfc3339(row.expires_at),
        deleted_at=rfc3339(row.deleted_at) if row.deleted_at else None,
        ttl_seconds=_ttl_seconds(row),
        generation=row.generation,
        forks=row.forks,
        faults=[fault_view(f, counts.get(str(f.id), Counts())) for f in row.spec.faults],
        links=links,
    )


def page_link(row: SandboxRow, *, base_url: str, key: bytes, max_ttl: int) -> str | None:
    """The sandbox's page with a view capability for it (`sandboxd.core.capability`): what
    the pull request's comment links to. It expires `view_expiry` after the sandbox does."""
    if not key:
        return None
    expires = view_expiry(row.expires_at, max_ttl=max_ttl)
    token = mint_view(key, name=row.name, uid=row.uid, expires=expires)
    return f"{base_url}/s/{row.name}?view={token}"


def preview_links(row: SandboxRow, *, key: bytes, routers: Mapping[str, str]) -> dict[str, str]:
    """A live sandbox's preview link on each service's router URL (`routers`: service →
    router URL, for the services that have one); none without a key or once it is gone (its
    token routes nowhere then)."""
    token = preview_token(key, uid=row.uid)
    if not token or row.phase not in LIVE:
        return {}
    return {service: preview_url(url, token) for service, url in routers.items()}


def fault_view(fault: FaultSpec, counts: Counts) -> dict[str, Any]:
    """A fault as stored, with its counts as the routers last reported them (0 before any
    report: what the control plane knows, not a guess). `unread`: requests whose body was too
    large for the router to read the JSON-RPC method the fault needs; `unrewritten`: firings of
    a rewriting fault whose response was too large to rewrite, passed through as it came."""
    return {
        **fault.as_json(),
        "matched": counts.matched,
        "injected": counts.injected,
        "unread": counts.unread,
        "unrewritten": counts.unrewritten,
    }


def event_view(row: EventRow) -> EventOut:
    return EventOut(
        time=rfc3339(row.time), type=row.type, reason=row.reason, message=row.message, by=row.by
    )


def _ttl_seconds(row: SandboxRow) -> int:
    """The spec's TTL, which the API always stores; a row without one (written by hand) shows
    the span it was created with."""
    ttl = row.spec.ttl_seconds
    return ttl if ttl is not None else int((row.expires_at - row.created_at).total_seconds())
