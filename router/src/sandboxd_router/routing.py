"""Which upstream a request goes to (DESIGN §6), first match wins:

1. for `mcp` services, an MCP session the router has seen start: the same upstream;
2. the routing key in the `baggage` header(s);
3. for `mcp` services, the routing key in the JSON-RPC body's `params._meta.baggage`
   (the body is read first — bounded — which is also the seam for per-request fault policy);
4. a preview cookie (a later release);
5. otherwise the baseline.

A key whose sandbox forks the service goes to the fork; any other key, or none, to the baseline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sandboxd_router.baggage import find_key
from sandboxd_router.mcp import key_from_body

if TYPE_CHECKING:
    from sandboxd_router.exchange import Exchange
    from sandboxd_router.state import RouterState
    from sandboxd_router.table import Service, Table


def route(state: RouterState, ex: Exchange, *, port: int | None) -> None:
    """Decide from the head alone, or mark the exchange to be held until its body is read."""
    table = state.table
    service = table.by_port.get(port) if port is not None else _by_host(table, ex.host)
    if service is None:
        where = f"port {port}" if port is not None else f"host {ex.host!r}"
        ex.fail(404 if port is None else 503, "unknown_service", f"no service is routed on {where}")
        return
    ex.service = service
    if service.is_mcp and ex.session is not None:
        hit = state.sessions.get(ex.session)
        if hit is not None:
            ex.upstream, ex.decision = hit
            ex.sandbox = _sandbox_of(ex.decision)
            return
    key = find_key(ex.baggage, table.key) if ex.baggage else None
    if key is None and service.is_mcp and ex.method == b"POST" and _has_body(ex):
        ex.hold = True  # step 3 needs the body
        return
    _choose(table, service, key, ex)


def route_by_body(state: RouterState, ex: Exchange, *, whole: bool) -> None:
    """Route a held MCP request by its body when `whole`; otherwise (too large, or the shared
    budget for held bodies is spent) by the remaining rules, without reading it."""
    ex.hold = False
    if ex.service is None or ex.responded:
        return
    key = None
    if whole and ex.body_size <= state.limits.mcp_body_bytes:
        key = key_from_body(b"".join(ex.body), state.table.key)
    _choose(state.table, ex.service, key, ex)


def _choose(table: Table, service: Service, key: str | None, ex: Exchange) -> None:
    sandbox = table.routes.get(key) if key is not None else None
    fork = sandbox.forks.get(service.name) if sandbox is not None else None
    if sandbox is not None and fork is not None:
        ex.upstream, ex.decision, ex.sandbox = fork, sandbox.decision, sandbox.sandbox
    else:
        ex.upstream, ex.decision = service.baseline, b"baseline"


def _by_host(table: Table, host: bytes | None) -> Service | None:
    return table.service_for_host(host) if host else None


def _has_body(ex: Exchange) -> bool:
    return ex.chunked or (ex.content_length is not None and ex.content_length != b"0")


def _sandbox_of(decision: bytes) -> str | None:
    return decision[8:].decode() if decision.startswith(b"sandbox=") else None
