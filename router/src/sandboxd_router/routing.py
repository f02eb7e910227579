"""Which upstream a request goes to (DESIGN §6), first match wins:

1. for `mcp` services, an MCP session the router has seen start: the same upstream;
2. the routing key in the `baggage` header(s);
3. for `mcp` services, the routing key in the JSON-RPC body's `params._meta.baggage`
   (the body is read first — bounded);
4. a preview cookie (`sandboxd_router.preview`: the connection finds it, and passes its key);
5. otherwise the baseline.

A key whose sandbox forks the service goes to the fork; any other key, or none, to the baseline.

Faults follow the key a request carries: a session's sandbox, else (a session started without
a key stays where it started) the key of the request's `baggage` header. A session's request
is not held to read `params._meta` for that.

`route` and `route_by_body` are pure functions of the table, the sessions and the request's
routing inputs (they only memoize what they decide in the table: `Table.decided`). The exchange
carries the `Decision` to the end; a per-request policy (faults, recording) reads it — the
service, the upstream, the sandbox whose key the request carries (`Decision.route`, forked or
not) — rather than adding branches to the exchange.
"""

from __future__ import annotations

from typing import Final

from sandboxd_router.baggage import find_key
from sandboxd_router.mcp import Sessions, key_from_body
from sandboxd_router.table import (
    BASELINE,
    FORWARD,
    HOLD,
    UNKNOWN,
    Decision,
    Route,
    Service,
    Table,
)

__all__ = [
    "FORWARD",
    "HOLD",
    "NOWHERE",
    "UNKNOWN",
    "Decision",
    "route",
    "route_by_body",
    "service_of",
]

NOWHERE: Final = Decision(FORWARD, None)
"""Not routed (yet): what a request refused before routing is answered as."""


def route(
    table: Table,
    sessions: Sessions,
    *,
    port: int | None,
    host: bytes | None,
    method: bytes,
    baggage: list[bytes],
    session: bytes | None,
    has_body: bool,
    preview: str | None = None,
) -> Decision:
    """Decide from the head alone: forward, hold for the body (rule 3), or unknown service.
    `port` is the listener's (None: gateway mode, the Host header names the service);
    `preview`: the routing key a live preview cookie names (rule 4)."""
    service = service_of(table, port=port, host=host)
    if service is None:
        return Decision(UNKNOWN, None)
    if service.is_mcp and session is not None:
        hit = sessions.get(session)
        if hit is not None:
            upstream, label, sandbox = hit
            # a session started without a key stays where it is, but the key a request
            # carries brings its sandbox's faults
            entry = table.by_sandbox.get(sandbox) if sandbox is not None else _entry(table, baggage)
            return Decision(FORWARD, service, upstream, label, _sandbox_of(label), entry)
    key = find_key(baggage, table.key) if baggage else None
    if key is None:
        if service.is_mcp and method == b"POST" and has_body:
            return Decision(HOLD, service)
        key = preview
    return _choose(table, service, key)


def route_by_body(
    table: Table, service: Service, body: bytes | None, preview: str | None = None
) -> Decision:
    """Route a held MCP request by its `body`; None when it was not read (too large, or the
    shared budget for held bodies is spent): then by the remaining rules."""
    key = key_from_body(body, table.key) if body is not None else None
    return _choose(table, service, key if key is not None else preview)


def service_of(table: Table, *, port: int | None, host: bytes | None) -> Service | None:
    """The service a request is for: its listener's, or in gateway mode (`port` None) the one
    its Host header names. (`route` starts here; so is a request the router answers itself
    recorded under its service.)"""
    return table.by_port.get(port) if port is not None else _by_host(table, host)


def _choose(table: Table, service: Service, key: str | None) -> Decision:
    known = table.decided.get(key)
    if known is not None:
        decision = known.get(service.name)
        if decision is not None:
            return decision
    entry = table.routes.get(key) if key is not None else None
    if entry is None:
        return _remember(table, None, service, Decision(FORWARD, service, service.baseline))
    fork = entry.forks.get(service.name)
    if fork is None:  # the sandbox does not fork this service: the baseline serves it
        decision = Decision(FORWARD, service, service.baseline, BASELINE, None, entry)
    else:
        decision = Decision(FORWARD, service, fork, entry.decision, entry.sandbox, entry)
    return _remember(table, key, service, decision)


def _remember(table: Table, key: str | None, service: Service, decision: Decision) -> Decision:
    """Keep a decision for the next request alike: only for keys the table routes (a key that
    routes nowhere is decided as no key), so the clients cannot grow it."""
    table.decided.setdefault(key, {})[service.name] = decision
    return decision


def _entry(table: Table, baggage: list[bytes]) -> Route | None:
    key = find_key(baggage, table.key) if baggage else None
    return table.routes.get(key) if key is not None else None


def _by_host(table: Table, host: bytes | None) -> Service | None:
    return table.service_for_host(host) if host else None


def _sandbox_of(label: bytes) -> str | None:
    return label[8:].decode() if label.startswith(b"sandbox=") else None
