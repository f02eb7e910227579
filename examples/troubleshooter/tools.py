"""The agent's one seam to its MCP tool servers: the SDK `Client`, in the request's context.

Every MCP call carries the current OpenTelemetry context — the caller's baggage (with the
sandbox's routing key) and the trace — twice, and nothing here copies a header by hand: as HTTP
headers, which the httpx instrumentation injects into every request of the session
(`initialize`, GET and DELETE too; see `telemetry.py`), and in `params._meta` of every request,
which the MCP SDK fills from the same context (its "MCP send …" CLIENT span, SEP-414; `_meta`
is what a router reads when a header is lost on the way). Same propagators, same context: the
two always agree. Each step (`cluster-mcp describe_pod`: the listing, the call and its retries)
is a span of the agent's, the SDK's spans and the HTTP requests under it.

What a tool answers is trusted only as far as a production agent should:

- a tool is called only if the server lists it (`tools/list`, once per session);
- a 429 is retried after its `Retry-After` within a `RetryBudget`; every other failure ends
  the call with a `ToolCallError` naming the service, the tool and the problem (`failures.py`);
- facts are read from `structuredContent` alone. Any other content item (anything but the text
  rendering of that same object) is ignored and reported as a warning, never passed on: tool
  output is data, and instructions planted in it must not reach the diagnosis;
- a result marked `isError`, without structured content, or empty is refused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx2
from failures import (
    RATE_LIMITED,
    BudgetSpent,
    HttpWatch,
    RetryBudget,
    ToolCallError,
    problem,
    transport_problem,
)
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent
from opentelemetry import trace

tracer = trace.get_tracer("troubleshooter")

HTTP_GRACE_S = 5.0
"""The HTTP client waits this much longer than the MCP call, so that a silent server ends as
the SDK's request time-out (a clean error) rather than as a read time-out inside its task
group."""

T = TypeVar("T")


@dataclass(frozen=True)
class ToolResult:
    """A tool's structured answer and what it took to get it."""

    service: str
    tool: str
    data: dict[str, Any]
    retries: list[dict[str, Any]] = field(default_factory=list)
    """One entry per rate-limited attempt: `{"status": 429, "retryAfter": seconds}`."""
    warnings: list[str] = field(default_factory=list)
    """What was ignored in the answer (content besides the structured result)."""


@dataclass
class ToolServer:
    """A connected MCP server, named by its catalog service. One call at a time."""

    service: str
    client: Client
    watch: HttpWatch
    timeout: float
    budget: RetryBudget
    in_flight: tuple[str, str] | None = None
    """(tool, step) of the request under way, kept when the session dies under it."""
    offered: set[str] | None = None

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolResult:
        """One step of the diagnosis, as one span (failures raised through it mark it)."""
        attributes = {"peer.service": self.service, "gen_ai.tool.name": tool}
        with tracer.start_as_current_span(f"{self.service} {tool}", attributes=attributes) as span:
            try:
                return await self._call(tool, arguments)
            except ToolCallError as e:
                span.set_attribute("error.type", type(e).__name__)
                raise

    async def _call(self, tool: str, arguments: dict[str, Any]) -> ToolResult:
        retries: list[dict[str, Any]] = []  # one budget for the step, listing included
        if self.offered is None:
            listing = await self._retrying(
                tool, self.client.list_tools, step="tools/list: ", retries=retries
            )
            self.offered = {t.name for t in listing.tools}
        if tool not in self.offered:
            offered = ", ".join(sorted(self.offered)) or "none"
            raise ToolCallError(
                self.service, tool, f"the server does not offer this tool (tools/list: {offered})"
            )
        result = await self._retrying(
            tool, lambda: self.client.call_tool(tool, arguments), retries=retries
        )
        return read_result(self.service, tool, result, retries=retries)

    async def _retrying(
        self,
        tool: str,
        request: Callable[[], Awaitable[T]],
        *,
        retries: list[dict[str, Any]],
        step: str = "",
    ) -> T:
        """`request()`, again after each 429 the budget allows; other failures are final.
        `step` prefixes the problem when the request is not the tool call itself."""
        while True:
            self.in_flight = (tool, step)
            self.watch.reset()
            try:
                response = await request()
            except MCPError as e:
                self.in_flight = None
                answer = self.watch.last
                if answer is None or answer.status != RATE_LIMITED:
                    why = step + problem(e, answer, timeout=self.timeout)
                    raise ToolCallError(self.service, tool, why, retries=retries) from e
                try:
                    wait = self.budget.delay(answer.retry_after, retries=retries)
                except BudgetSpent as spent:
                    why = step + str(spent)
                    raise ToolCallError(self.service, tool, why, retries=retries) from e
                retries.append({"status": RATE_LIMITED, "retryAfter": wait})
                await asyncio.sleep(wait)
                continue
            self.in_flight = None
            return response


def read_result(
    service: str, tool: str, result: CallToolResult, *, retries: list[dict[str, Any]]
) -> ToolResult:
    """The structured content of a usable result; everything else in it becomes a warning."""
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content).strip()[:300]
        why = f"the tool reported an error: {text}" if text else "the tool reported an error"
        raise ToolCallError(service, tool, why, retries=retries)
    data = result.structured_content
    if data is None:
        raise ToolCallError(service, tool, "the result has no structured content", retries=retries)
    if not data:
        raise ToolCallError(
            service, tool, "the result is empty (structuredContent has no fields)", retries=retries
        )
    ignored = [c for c in result.content if not _renders(c, data)]
    warnings = []
    if ignored:
        size = sum(len(getattr(c, "text", "")) for c in ignored)
        warnings.append(
            f"{len(ignored)} unstructured content item(s) ignored ({size} characters); facts "
            "are read from structuredContent only"
        )
    return ToolResult(service, tool, dict(data), retries, warnings)


def _renders(item: object, data: dict[str, Any]) -> bool:
    """The text item the SDK adds beside `structuredContent`: the same object as JSON."""
    if not isinstance(item, TextContent):
        return False
    try:
        return bool(json.loads(item.text) == data)
    except ValueError:
        return False


@asynccontextmanager
async def connect(
    service: str,
    url: str,
    *,
    timeout: float,
    budget: RetryBudget | None = None,
) -> AsyncIterator[ToolServer]:
    """An MCP session to `url` (…/mcp) for the duration of one diagnosis; `timeout` bounds each
    call.

    Failing to connect or to close the session is a `ToolCallError`, and so is a connection that
    breaks during a call (named by the tool in flight). Any other exception raised by the
    caller's block leaves wrapped in the SDK's exception groups: catch what you expect inside
    the block.
    """
    watch = HttpWatch()
    server: ToolServer | None = None
    try:
        http = httpx2.AsyncClient(
            timeout=timeout + HTTP_GRACE_S,
            event_hooks={"response": [watch.on_response]},
        )
        async with http:
            transport = streamable_http_client(url, http_client=http)
            async with Client(transport, mode="auto", read_timeout_seconds=timeout) as client:
                server = ToolServer(service, client, watch, timeout, budget or RetryBudget())
                yield server
                server = None
    except Exception as e:
        leaf = _leaf(e)
        if isinstance(leaf, ToolCallError):
            raise leaf from None  # an inner session's failure, out of the SDK's groups
        if server is None:
            why = f"{url}: {type(leaf).__name__}: {leaf}"
            raise ToolCallError(service, "connect", why) from e
        if isinstance(leaf, httpx2.TransportError | OSError):
            tool, step = server.in_flight or ("session", "")
            raise ToolCallError(service, tool, step + transport_problem(leaf)) from e
        raise


def _leaf(error: BaseException) -> BaseException:
    """The first real error inside the SDK's (possibly nested) task-group exception groups."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error
