"""The official MCP SDK client, connected with a seam to see each HTTP exchange.

The SDK hides HTTP; an httpx2 event hook on the client it is given records, per exchange, the
JSON-RPC method and the router's `sandboxd-route` answer, and can add headers to chosen requests
(e.g. the routing key on `initialize` only, as an agent that sets baggage late would).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from opentelemetry import baggage, context

MODES = ["auto", "legacy", "2026-07-28"]

ExtraHeaders = Callable[[str | None], Mapping[str, str]]
"""JSON-RPC method of a request (None for GET/DELETE and responses) → headers to add to it."""


@dataclass(frozen=True)
class Exchange:
    http_method: str
    rpc_method: str | None
    status: int
    route: str | None
    fault: str | None = None  # the `sandboxd-fault` header(s), comma-joined
    cookies: tuple[str, ...] = ()  # the `Set-Cookie` headers


@dataclass
class Exchanges:
    """What one client saw, in order; read it after the client is closed to include DELETE."""

    items: list[Exchange]

    @property
    def routes(self) -> set[str | None]:
        return {x.route for x in self.items}

    @property
    def faults(self) -> list[str]:
        return [x.fault for x in self.items if x.fault is not None]

    @property
    def rpc_methods(self) -> set[str | None]:
        return {x.rpc_method for x in self.items}

    @property
    def http_methods(self) -> set[str]:
        return {x.http_method for x in self.items}


def rpc_method(request: httpx2.Request) -> str | None:
    if request.method != "POST":
        return None
    try:
        body = json.loads(request.content)
    except ValueError:
        return None
    method = body.get("method") if isinstance(body, dict) else None
    return method if isinstance(method, str) else None


@asynccontextmanager
async def connect(
    url: str,
    *,
    mode: str,
    headers: Mapping[str, str] | None = None,
    extra_headers: ExtraHeaders | None = None,
) -> AsyncIterator[tuple[Client, Exchanges]]:
    """An SDK `Client` on `url` in `mode`, and the exchanges it makes."""
    seen = Exchanges(items=[])

    async def on_request(request: httpx2.Request) -> None:
        if extra_headers is not None:
            request.headers.update(extra_headers(rpc_method(request)))

    async def on_response(response: httpx2.Response) -> None:
        request = response.request
        route = response.headers.get("sandboxd-route")
        fault = response.headers.get("sandboxd-fault")
        cookies = tuple(response.headers.get_list("set-cookie"))
        seen.items.append(
            Exchange(
                request.method, rpc_method(request), response.status_code, route, fault, cookies
            )
        )

    http = httpx2.AsyncClient(
        headers=dict(headers or {}),
        timeout=httpx2.Timeout(30, read=60),
        event_hooks={"request": [on_request], "response": [on_response]},
    )
    async with http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, read_timeout_seconds=30) as client:
            yield client, seen


async def whoami(client: Client, *, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Which fixture instance answered, with the Host and baggage it saw."""
    result = await client.call_tool("whoami", {}, meta=meta)  # type: ignore[arg-type]
    assert not result.is_error, result
    assert result.structured_content is not None, result
    return dict(result.structured_content)


@contextmanager
def otel_baggage(**members: str) -> Iterator[None]:
    """Make `members` the current OpenTelemetry baggage; the SDK copies it into `_meta`."""
    ctx = context.get_current()
    for key, value in members.items():
        ctx = baggage.set_baggage(key, value, context=ctx)
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)
