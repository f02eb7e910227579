"""Plain ASGI middleware: a request-body size limit and request metrics."""

from __future__ import annotations

import time
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandboxd.metrics import Metrics

MAX_REQUEST_HEAD = 64 * 1024
"""Largest request line plus headers the server reads. uvicorn's httptools protocol reads a
head of any size before the app sees it (and before any token is checked), so the server runs
the h11 protocol, which refuses a head past this with a 400."""


class BodyLimit:
    """413 for a body over `limit` bytes (or the path's own in `larger`), whether it declares
    its length or streams."""

    def __init__(
        self, app: ASGIApp, *, limit: int, larger: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.limit = limit
        self.larger = dict(larger or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.limit)
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                await _send_413(send, limit)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, f"the request body is larger than {limit} bytes")
            return message

        await self.app(scope, limited, send)


async def _send_413(send: Send, limit: int) -> None:
    body = (
        b'{"error":"request_too_large","message":"the request body is larger than '
        + str(limit).encode()
        + b' bytes"}'
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestMetrics:
    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answer = Answered(send)
        try:
            await self.app(scope, receive, answer.send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.http_requests.labels(method, route, str(answer.status)).inc()
            self.metrics.http_seconds.labels(method, route).observe(time.perf_counter() - started)


class Answered:
    """A `send` that notes the status of the answer it sends (500 until one starts: what a
    failure before any answer becomes)."""

    def __init__(self, send: Send) -> None:
        self.status = 500
        self._send = send

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)
