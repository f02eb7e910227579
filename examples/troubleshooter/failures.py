"""What went wrong with a tool call, in words an operator can act on, and when to try again.

The MCP SDK folds every HTTP failure of a request into one JSON-RPC error (-32603 "Server
returned an error response"), so a 429, a 503 and a 504 look alike to its caller. `HttpWatch`, a
response hook on the agent's own `httpx2` client, keeps what the SDK drops: the status and the
`Retry-After` of the last answer to a JSON-RPC request. Calls on one tool server are made one at
a time, so the last answer is the current call's own.

The failures the agent meets and how each reads (`problem`, `transport_problem`):

- an HTTP error status → "HTTP 503 Service Unavailable"; a 504 → "timed out: HTTP 504 …";
- 429 → retried within a `RetryBudget`, else "rate limited (HTTP 429) …" saying the limit;
- no answer within the agent's own limit per call → "timed out: no answer within 10 s …";
- a JSON-RPC error answered by the server → "JSON-RPC error -32603: <its message>";
- a body that is not JSON → "answered invalid JSON (…)";
- a connection reset or refused (the SDK's task group fails) → "the connection was reset …".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from time import time
from typing import Any

import httpx2
from mcp.shared.exceptions import MCPError
from mcp_types import PARSE_ERROR, REQUEST_TIMEOUT

RATE_LIMITED = 429
GATEWAY_TIMEOUT = 504
DEFAULT_RETRY_AFTER = 1.0
"""Seconds to wait on a 429 that does not say how long."""


class ToolCallError(Exception):
    """A tool server could not be reached or did not answer with a usable result."""

    def __init__(
        self, service: str, tool: str, problem: str, *, retries: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(f"{service} {tool}: {problem}")
        self.service = service
        self.tool = tool
        self.problem = problem
        self.retries = retries or []
        """The rate-limited attempts made before this failure."""


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    retry_after: str | None


class HttpWatch:
    """The HTTP status of the last answer to a JSON-RPC request (see the module docstring)."""

    def __init__(self) -> None:
        self.last: HttpAnswer | None = None

    def reset(self) -> None:
        self.last = None

    async def on_response(self, response: httpx2.Response) -> None:
        if response.request.method == "POST" and _is_request(response.request):
            self.last = HttpAnswer(response.status_code, response.headers.get("retry-after"))


def _is_request(request: httpx2.Request) -> bool:
    """A JSON-RPC request (with an id), not a notification or a response the client sends."""
    try:
        body = json.loads(request.content)
    except (httpx2.RequestNotRead, ValueError):
        return False
    return isinstance(body, dict) and "method" in body and "id" in body


@dataclass(frozen=True)
class RetryBudget:
    """How long the agent keeps trying one rate-limited step before it gives up."""

    attempts: int = 3
    """Calls of one tool per step, the first included."""
    wait_s: float = 5.0
    """Seconds of waiting on `Retry-After`, in total, per step."""

    def delay(self, retry_after: str | None, *, retries: list[dict[str, Any]]) -> float:
        """How long to wait before the next attempt; `BudgetSpent` when it must not be made."""
        wait = retry_after_seconds(retry_after)
        waited = sum(float(r["retryAfter"]) for r in retries)
        if len(retries) + 1 >= self.attempts:
            raise BudgetSpent(
                f"rate limited (HTTP 429) on all {self.attempts} attempts "
                f"(retry budget: {self.attempts} attempts, {self.wait_s:g} s of waiting)"
            )
        if waited + wait > self.wait_s:
            raise BudgetSpent(
                f"rate limited (HTTP 429) with Retry-After {wait:g} s, beyond the retry budget "
                f"of {self.wait_s:g} s of waiting ({self.wait_s - waited:g} s left); not retried"
            )
        return wait


class BudgetSpent(Exception):
    """A 429 that the retry budget does not allow waiting for."""


def retry_after_seconds(value: str | None) -> float:
    """`Retry-After` as seconds: a number of seconds or an HTTP date; absent or unreadable
    values wait the default."""
    if value is None:
        return DEFAULT_RETRY_AFTER
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER


def problem(error: MCPError, answer: HttpAnswer | None, *, timeout: float) -> str:
    """An `MCPError` from a call, read together with the HTTP answer the watch saw."""
    if answer is not None and answer.status >= 400:
        reason = f"HTTP {answer.status} {_phrase(answer.status)}"
        return f"timed out: {reason}" if answer.status == GATEWAY_TIMEOUT else reason
    if answer is None and error.code == REQUEST_TIMEOUT:
        return f"timed out: no answer within {timeout:g} s (the agent's limit per call)"
    if error.code == PARSE_ERROR and error.message.startswith("Failed to parse"):
        return f"answered invalid JSON ({_json_complaint(error.message)})"
    return f"JSON-RPC error {error.code}: {error.message}"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "(unknown status)"


def _json_complaint(message: str) -> str:
    """The parser's own words ("Invalid JSON: EOF while parsing …") without the echoed body."""
    start = message.find("Invalid JSON:")
    if start < 0:
        return message.splitlines()[0]
    return message[start:].split(" [", 1)[0].strip()


def transport_problem(error: BaseException) -> str:
    """A failure below HTTP: the connection reset, refused, or silent past the HTTP timeout."""
    name = type(error).__name__
    if _caused_by(error, ConnectionResetError):
        return f"the connection was reset before an answer ({name}: ECONNRESET)"
    if isinstance(error, httpx2.ReadError | httpx2.RemoteProtocolError):
        return f"the connection broke before an answer ({name})"
    if isinstance(error, httpx2.TimeoutException):
        return f"timed out: no HTTP answer ({name})"
    if isinstance(error, httpx2.ConnectError):
        return f"cannot connect ({name}: {error})"
    return f"the connection failed ({name}: {error})" if str(error) else f"failed ({name})"


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
