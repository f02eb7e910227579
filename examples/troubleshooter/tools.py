"""The agent's one seam to its MCP tool servers: the SDK `Client`, with the request's context.

Every MCP call carries the incoming request's `baggage` and `traceparent`/`tracestate` twice:
as HTTP headers (on an `httpx2.AsyncClient`, so `initialize`, GET and DELETE carry them too)
and in `params._meta` of each tool call (the routing key in `_meta.baggage` is what a router
reads when a header is lost on the way). The raw bytes are forwarded; OpenTelemetry's baggage
propagator would re-encode them.

Errors are translated here, into `ToolCallError`: the SDK's `MCPError` (HTTP failures, JSON-RPC
errors, time-outs), a transport that cannot connect, a result marked `isError`, a result with no
structured content.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

PROPAGATED = ("baggage", "traceparent", "tracestate")
"""Request headers that follow the request into every MCP call."""


class ToolCallError(Exception):
    """A tool server could not be reached or did not answer with a usable result."""

    def __init__(self, service: str, tool: str, problem: str) -> None:
        super().__init__(f"{service} {tool}: {problem}")
        self.service = service
        self.tool = tool


@dataclass(frozen=True)
class TraceContext:
    """The W3C headers of the request being served (absent ones are left out)."""

    headers: Mapping[str, str]

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.headers)


@dataclass
class ToolServer:
    """A connected MCP server, named by its catalog service."""

    service: str
    client: Client
    context: TraceContext

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            result = await self.client.call_tool(
                tool,
                arguments,
                meta=self.context.meta,  # type: ignore[arg-type]
            )
        except MCPError as e:
            raise ToolCallError(self.service, tool, str(e)) from e
        if result.is_error:
            text = " ".join(getattr(c, "text", "") for c in result.content).strip()
            raise ToolCallError(self.service, tool, text or "the tool reported an error")
        if result.structured_content is None:
            raise ToolCallError(self.service, tool, "the result has no structured content")
        return dict(result.structured_content)


def _leaf(error: BaseException) -> BaseException:
    """The first real error inside the SDK's (possibly nested) task-group exception groups."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


@asynccontextmanager
async def connect(
    service: str, url: str, *, context: TraceContext, timeout: float = 20
) -> AsyncIterator[ToolServer]:
    """An MCP session to `url` (…/mcp) for the duration of one diagnosis.

    Failing to connect or to close the session is a `ToolCallError`. An exception raised by the
    caller's block leaves wrapped in the SDK's exception groups: catch what you expect inside
    the block.
    """
    in_block = False
    try:
        http = httpx2.AsyncClient(headers=dict(context.headers), timeout=timeout)
        async with http:
            transport = streamable_http_client(url, http_client=http)
            async with Client(transport, mode="auto", read_timeout_seconds=timeout) as client:
                in_block = True
                yield ToolServer(service, client, context)
                in_block = False
    except Exception as e:
        if in_block:
            raise
        leaf = _leaf(e)
        raise ToolCallError(service, "connect", f"{url}: {type(leaf).__name__}: {leaf}") from e
