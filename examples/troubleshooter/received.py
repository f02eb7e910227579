"""What the agent received: the newest requests' headers exactly as they arrived, so a test can
check what the proxy in front of it (sandboxd's router) forwarded — the cookies, the `baggage`.

Off unless `AGENT_DEBUG_REQUESTS=1`: headers carry users' cookies, which a real deployment must
not serve back. On, `GET /debug/requests` answers

    {"items": [{"method": "GET", "target": "/?x=1", "headers": [["cookie", "a=1"], ...]}, ...]}

newest first: the last `KEPT` requests, health checks and this view left out. Header names
come lower-cased (as the HTTP server hands them over), values as sent, each header line on its
own (a repeated header stays repeated).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

KEPT = 100
VIEW = "/debug/requests"
UNRECORDED = frozenset({"/healthz", VIEW})


class Received:
    """The newest requests, bounded (`kept`)."""

    def __init__(self, *, kept: int = KEPT) -> None:
        self.items: deque[dict[str, Any]] = deque(maxlen=kept)

    def record(self, scope: Scope) -> None:
        query = scope.get("query_string", b"").decode("latin-1")
        target = scope["path"] + (f"?{query}" if query else "")
        headers = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]]
        self.items.appendleft({"method": scope["method"], "target": target, "headers": headers})

    async def view(self, _: Request) -> Response:
        return JSONResponse({"items": list(self.items)})


class Recording:
    """ASGI middleware: records each HTTP request in `received` before the app sees it."""

    def __init__(self, app: ASGIApp, *, received: Received) -> None:
        self.app = app
        self.received = received

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in UNRECORDED:
            self.received.record(scope)
        await self.app(scope, receive, send)
