"""The route table routers fetch from `GET /v1/routes`, and its ETag.

Keyed by routing key so that a router's lookup is one dict access whatever the number of
sandboxes. A sandbox appears as soon as it exists (with the forks whose upstream is known), so a
fork that is still starting answers 502 rather than silently falling back to the baseline.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sandboxd.core.catalog import Catalog
from sandboxd.core.fault_spec import FaultSpec
from sandboxd.core.faults import with_ids

SEPARATORS = (",", ":")


@dataclass(frozen=True, slots=True)
class RoutedSandbox:
    name: str
    routing_key: str
    forks: dict[str, str]  # service → upstream URL
    faults: tuple[FaultSpec, ...] = ()
    preview: str = ""
    """The sandbox's preview token (`sandboxd.core.preview`; "" for none): routers map it to
    the routing key, so a token works exactly while the sandbox is in the table."""
    expires: int = 0
    """The sandbox's expiry in Unix seconds (0: unknown): a preview cookie lasts no longer."""


@dataclass(frozen=True, slots=True)
class RouteTable:
    body: bytes
    etag: str
    sandboxes: int
    head: bytes = b"{}"
    """`{"baggageKey":…,"services":[…]}`: what a delta repeats of the whole."""
    entries: dict[str, bytes] = field(default_factory=dict)
    """Routing key → its member of `routes` (the bytes the body joins)."""

    def delta_from(self, old: RouteTable) -> bytes:
        """This table as changes to `old`: the entries that differ (the same bytes object when
        unchanged: a route book re-encodes only what changed; one re-encoded alike is sent
        again, which is harmless), the keys gone, and `base`, the version they apply to. A
        router applies it to the table it holds, so what it reads does not grow with the
        number of sandboxes."""
        known = old.entries
        changed = [b for k, b in self.entries.items() if known.get(k) is not b]
        removed = [k for k in known if k not in self.entries]
        base, version = old.etag.strip('"'), self.etag.strip('"')
        return (
            self.head[:-1]
            + b',"base":"' + base.encode() + b'","removed":'
            + json.dumps(removed, separators=SEPARATORS).encode()
            + b',"routes":{' + b",".join(changed) + b'},"version":"' + version.encode() + b'"}'
        )  # fmt: skip


def build_route_table(
    *,
    catalog: Catalog,
    sandboxes: Iterable[RoutedSandbox],
    encoded: Callable[[RoutedSandbox], bytes] | None = None,
) -> RouteTable:
    """`encoded`: a sandbox's entry as `route_entry` gives it, perhaps remembered from the last
    table (serialising every sandbox's faults anew made a table of 1,000 sandboxes with 3
    faults each cost 13 ms, on every change of any one of them)."""
    services = [
        {
            "name": s.name,
            "protocol": s.protocol,
            "routerPort": s.router_port,
            "baseline": s.baseline.url,
        }
        for s in catalog.services
    ]
    entry = encoded or route_entry
    by_key = {sb.routing_key: entry(sb) for sb in sorted(sandboxes, key=lambda s: s.routing_key)}
    entries = list(by_key.values())
    head = {"baggageKey": catalog.baggage_key, "services": services}
    # Built in a fixed order, so the same content always gives the same bytes and ETag (the
    # bytes `json.dumps` gives the whole, `"routes"` last); the version goes last so that the
    # table is serialised once.
    encoded_head = json.dumps(head, separators=SEPARATORS).encode()
    content = encoded_head[:-1] + b',"routes":{' + b",".join(entries) + b"}}"
    etag = hashlib.sha256(content).hexdigest()[:20]
    body = content[:-1] + b',"version":"' + etag.encode() + b'"}'
    return RouteTable(
        body=body, etag=f'"{etag}"', sandboxes=len(entries), head=encoded_head, entries=by_key
    )


def route_entry(sb: RoutedSandbox) -> bytes:
    """`"<routing key>":{…}`: one sandbox's member of the table's `routes`."""
    entry: dict[str, object] = {
        "sandbox": sb.name,
        "forks": dict(sorted(sb.forks.items())),
        # The wire form every router reads: in list order, camelCase, unset keys absent,
        # and always an id (a spec gives them; `with_ids` covers a hand-made entry).
        "faults": [fault.as_json() for fault in with_ids(list(sb.faults))],
    }
    if sb.preview:
        entry["preview"] = sb.preview
    if sb.expires:
        entry["expiresAt"] = sb.expires
    # A digest of the entry: a router keeps what it built for an entry whose `rev` it has
    # seen, so a table of thousands of sandboxes costs it the changed ones, not all of them.
    content = json.dumps(entry, separators=SEPARATORS).encode()
    entry["rev"] = hashlib.blake2b(content, digest_size=12).hexdigest()
    return json.dumps({sb.routing_key: entry}, separators=SEPARATORS)[1:-1].encode()
