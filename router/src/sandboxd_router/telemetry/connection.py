"""One kept-alive HTTP/1.1 connection from the telemetry process (`http.client`, stdlib: httpx
alone would cost the process 9 MB of its memory), for one thread at a time: the signals posts
to the control plane (`post.Poster`) and the span batches to an OTLP endpoint
(`otlppost.Poster`) each hold one.

A kept-alive connection the server closed while it was idle fails the next request at once
(the server closed it, or reset it): that request is sent again, once, on a new connection —
never one that timed out, which the server may be processing.
"""

from __future__ import annotations

import http.client
import ssl
from email.message import Message
from typing import NamedTuple
from urllib.parse import urlsplit

# how a request on a connection the server closed while idle fails: before any answer
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Answer(NamedTuple):
    status: int
    headers: Message
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Connection:
    def __init__(self, url: str, *, context: ssl.SSLContext | None = None) -> None:
        """`url`: its scheme, host and port say where to connect; `context`: TLS settings for
        https (default: the system's certificate store, `SSL_CERT_FILE` honoured)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port
        self.tls = (context or ssl.create_default_context()) if parts.scheme == "https" else None
        self._conn: http.client.HTTPConnection | None = None

    def post(
        self, target: str, body: bytes | list[bytes], headers: dict[str, str], timeout: float
    ) -> Answer:
        """POST `body` (or the pieces it is made of, sent one after the other: no copy joins
        them) to `target` (path and query); raises `OSError` or `http.client.HTTPException`
        when no whole answer came."""
        if not isinstance(body, bytes):
            headers = {**headers, "Content-Length": str(sum(map(len, body)))}
        reused = self._conn is not None
        try:
            return self._exchange(target, body, headers, timeout)
        except _STALE:
            if not reused:
                raise
        return self._exchange(target, body, headers, timeout)  # on a new connection

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _exchange(
        self, target: str, body: bytes | list[bytes], headers: dict[str, str], timeout: float
    ) -> Answer:
        conn = self._connect(timeout)
        try:
            conn.request("POST", target, body=body, headers=headers)
            response = conn.getresponse()
            content = response.read()  # (all of it: the connection is used again)
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if response.will_close:
            self.close()
        return Answer(response.status, response.headers, content)

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is None:
            if self.tls is not None:
                conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=timeout, context=self.tls
                )
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            self._conn = conn
        elif conn.sock is not None:
            conn.sock.settimeout(timeout)
        conn.timeout = timeout
        return conn
