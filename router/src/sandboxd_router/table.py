"""The route table as the router holds it: built once per change, read on every request.

A request's route is two dict lookups (service by port or host; sandbox by routing key). Upstream
objects — and so their connection pools — survive table swaps when their URL is unchanged.
The `Decision`s the table yields (see `sandboxd_router.routing`) are made once per key and
service in use, and kept with the table: a routed request allocates nothing to be routed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from sandboxd_router.faults import FaultBook, ServiceFaults
from sandboxd_router.record import Ids
from sandboxd_router.upstream import Upstream


class TableError(ValueError):
    """The route table JSON is not usable."""


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    is_mcp: bool
    port: int | None
    baseline: Upstream


@dataclass(frozen=True, slots=True)
class Route:
    sandbox: str
    decision: bytes  # the `sandboxd-route` header value, b"sandbox=<name>"
    forks: dict[str, Upstream]
    by_service: dict[str, ServiceFaults] = field(default_factory=dict)
    """The sandbox's faults compiled (`sandboxd_router.faults`), by service."""
    key: str = ""
    """The routing key that selects this entry (the control plane keys its signals by it)."""
    rev: str = ""
    """The control plane's digest of the entry: an entry of the next table with the same one
    is this very route (nothing parsed or compiled again, the counters carry on)."""
    preview: str = ""
    """The sandbox's preview token ("": none; `sandboxd_router.preview`)."""
    expires: float = 0.0
    """The sandbox's expiry in Unix seconds (0: not said): a preview cookie lasts no longer."""


# what a decision says to do
FORWARD: Final = 0  # send it to `upstream`
HOLD: Final = 1  # read the (MCP) body first, then route by it
UNKNOWN: Final = 2  # no service is routed on this port or host: 404 (gateway) or 503

BASELINE: Final = b"baseline"


class Decision:
    """Where a request goes, and why; shared by every request routed alike (never changed but
    for `recorded`, a cache)."""

    def __init__(
        self,
        action: int,
        service: Service | None,
        upstream: Upstream | None = None,
        label: bytes = BASELINE,
        sandbox: str | None = None,
        route: Route | None = None,
    ) -> None:
        self.action = action
        self.service = service
        self.upstream = upstream
        self.label = label
        """The `sandboxd-route` header: b"baseline" or b"sandbox=<name>"."""
        self.sandbox = sandbox
        """The sandbox served (None for the baseline)."""
        self.route = route
        """The table's entry for the key the request carries, even when the baseline serves it
        (its sandbox does not fork the service): where a sandbox's faults are looked up."""
        self.faults = route.by_service.get(service.name) if route and service else None
        """That sandbox's faults on this service (None: none; the one test a request pays)."""
        self.recorded: Ids | None = None
        """Its names' ids in the request records (`Recorder.ids`): set by the first request
        recorded (the one thing about a decision that changes)."""


@dataclass(frozen=True, slots=True)
class Table:
    version: str
    key: bytes
    services: dict[str, Service]
    by_port: dict[int, Service]
    routes: dict[str, Route]
    by_sandbox: dict[str, Route] = field(default_factory=dict, compare=False)
    """The same entries by sandbox name: an MCP session's sandbox, for its faults."""
    decided: dict[str | None, dict[str, Decision]] = field(default_factory=dict, compare=False)
    """Decisions made so far, by routing key (None: no key) and service name."""
    previews: dict[str, Route] = field(default_factory=dict, compare=False)
    """The same entries by preview token: what a preview cookie names."""

    def service_for_host(self, host: bytes) -> Service | None:
        """Gateway mode: the service named by the Host's first DNS label (or the whole host)."""
        name = host.split(b":", 1)[0].split(b".", 1)[0].decode("ascii", "replace").lower()
        return self.services.get(name)


EMPTY = Table(version="", key=b"sandbox", services={}, by_port={}, routes={})


class UpstreamRegistry:
    """One Upstream (and pool) per URL, reused across tables."""

    def __init__(self) -> None:
        self._by_url: dict[str, Upstream] = {}

    def get(self, url: str) -> Upstream:
        upstream = self._by_url.get(url)
        if upstream is None:
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                raise TableError(f"unsupported upstream {url!r}: only http://host:port")
            upstream = Upstream(parts.hostname, parts.port or 80)
            self._by_url[_own(url)] = upstream
        return upstream

    def retain(self, table: Table) -> list[Upstream]:
        """Forget upstreams the new table no longer names; they are returned to be closed."""
        live = {id(s.baseline) for s in table.services.values()}
        live |= {id(u) for r in table.routes.values() for u in r.forks.values()}
        gone = [u for u in self._by_url.values() if id(u) not in live]
        self._by_url = {url: u for url, u in self._by_url.items() if id(u) in live}
        return gone


def parse_table(
    raw: bytes,
    *,
    upstreams: UpstreamRegistry,
    faults: FaultBook | None = None,
    previous: Table | None = None,
) -> Table:
    """`faults`: the book that keeps fault counters across tables (a fresh one if None);
    `previous`: the table in use, whose routes are kept where the entry's `rev` is unchanged."""
    book = faults if faults is not None else FaultBook()
    book.begin()
    known = previous.routes if previous is not None else {}
    try:
        data = json.loads(raw)
        base = data.get("base")
        routes: dict[str, Route] = {}
        if base is not None:  # a delta: the changes to `previous`
            if previous is None or previous.version != base:
                raise TableError(f"a delta from {base!r} does not apply to the table held")
            gone = set(data["removed"]) | set(data["routes"])
            for key, kept in known.items():
                if key not in gone:
                    routes[key] = kept
                    book.keep(kept.by_service)
        services = {}
        for item in data["services"]:
            service = Service(
                name=str(item["name"]),
                is_mcp=item.get("protocol") == "mcp",
                port=int(item["routerPort"]) if item.get("routerPort") else None,
                baseline=upstreams.get(str(item["baseline"])),
            )
            services[service.name] = service
        for key, route in data["routes"].items():
            rev = route.get("rev")
            old = known.get(key)
            if old is not None and old.rev and old.rev == rev:
                book.keep(old.by_service)
                routes[_own(key)] = old
                continue
            key, sandbox = _own(key), _own(route["sandbox"])
            routes[key] = Route(
                sandbox=sandbox,
                decision=f"sandbox={sandbox}".encode(),
                forks={str(s): upstreams.get(str(url)) for s, url in route["forks"].items()},
                by_service=book.compile(sandbox, route.get("faults") or [], key=key),
                key=key,
                rev=_own(rev) if isinstance(rev, str) else "",
                preview=_own(route.get("preview") or ""),
                expires=float(route.get("expiresAt") or 0),
            )
        book.commit()
        return Table(
            version=str(data.get("version", "")),
            key=str(data.get("baggageKey", "sandbox")).encode(),
            services=services,
            by_port={s.port: s for s in services.values() if s.port is not None},
            routes=routes,
            by_sandbox={r.sandbox: r for r in routes.values()},
            previews={r.preview: r for r in routes.values() if r.preview},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise TableError(f"malformed route table: {e!r}") from e


def _own(value: object) -> str:
    """A string that is not the parsed document's: the document is freed once the table is
    built, but memory holding a string kept from it stays with the process (a table with
    faults parses into tens of megabytes; its keys and names, kept, pinned most of them)."""
    return str(value).encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
