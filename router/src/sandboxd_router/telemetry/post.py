"""The telemetry process's HTTP client: one POST at a time to the control plane, on a kept-alive
connection, off the event loop.

Not httpx (which the router's own reporter uses): importing it costs this process 9 MB of its
memory, a seventh of what the router and its telemetry process may use together, and one post a
second needs no pool, HTTP/2, redirects or proxies. `http.client` runs in one worker thread, so
a control plane that answers slowly never stalls the loop that drains the ring.

TLS verifies against the system's certificate store (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured,
as OpenSSL does). A connection the server closed while idle is retried once on a new one: the
posts are idempotent (buckets are cumulative, records inserted once per (instance, seq)).
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple
from urllib.parse import urlsplit


class PostError(Exception):
    """No answer: the connection failed, broke or timed out."""


class Answer(NamedTuple):
    status: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


# a kept-alive connection the server closed while it was idle fails in one of these ways
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class Poster:
    def __init__(self, url: str, headers: dict[str, str], timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port
        self.tls = parts.scheme == "https"
        self.prefix = parts.path.rstrip("/")
        self.headers = headers
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="sandboxd-telemetry-post")

    async def post(self, path: str, content: bytes, content_type: str) -> Answer:
        """POST `content` to the URL's path + `path`; raises `PostError` when no answer came."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._worker, self._post, path, content, content_type)
        except _STALE as e:
            raise PostError(f"{type(e).__name__}: {e}") from e

    def close(self) -> None:
        """Let a post under way finish in its thread (bounded by `timeout`), then close."""
        self._worker.submit(self._drop)
        self._worker.shutdown(wait=False)

    def _post(self, path: str, content: bytes, content_type: str) -> Answer:
        headers = {**self.headers, "Content-Type": content_type}
        reused = self._conn is not None
        try:
            return self._exchange(self.prefix + path, content, headers)
        except _STALE:
            if not reused:
                raise
        return self._exchange(self.prefix + path, content, headers)  # on a new connection

    def _exchange(self, target: str, content: bytes, headers: dict[str, str]) -> Answer:
        conn = self._conn or self._connect()
        try:
            conn.request("POST", target, body=content, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except _STALE:
            self._drop()
            raise
        except (OSError, http.client.HTTPException) as e:
            self._drop()
            raise PostError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e
        if response.will_close:
            self._drop()
        return Answer(response.status, body)

    def _connect(self) -> http.client.HTTPConnection:
        if self.tls:
            context = ssl.create_default_context()
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=context
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._conn = conn
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
