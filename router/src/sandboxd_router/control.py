"""The router's HTTP/1.1 client of the control plane: the route table's long poll (`watch`)
and the fault reports (`report`), on the router's loop.

Not httpx: with httpcore, anyio, h11, h2 and idna it costs the router 5.5 MB of its memory, for
one long poll and one report a second. One kept-alive connection per client, one request at a
time. A request on a kept-alive connection that the server closed while it was idle fails
before any answer: it is sent again, once, on a new connection — never one that timed out.

https verifies against the system's certificate store (`SSL_CERT_FILE` / `SSL_CERT_DIR`
honoured, as OpenSSL does); no proxy is used, as by the telemetry process's posts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from sandboxd_router.tls import context_for

HEAD_LIMIT = 64 * 1024  # a response head larger than this is refused


class ControlError(Exception):
    """No whole answer: the connection failed, broke or timed out, or the answer was not HTTP."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    """Lower-case names; a repeated header keeps its last value."""
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> object:
        """The body as JSON; raises `ValueError` when it is not."""
        return json.loads(self.body)


class _Stale(Exception):
    """A kept-alive connection failed before any byte of the answer."""


class ControlClient:
    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str],
        timeout: float,
        connect_timeout: float | None = None,
    ) -> None:
        """`url`: the control plane's (a path in it prefixes every request's); `timeout`: for
        a whole request and its answer; `connect_timeout`: for a connection (default
        `timeout`)."""
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.tls = context_for(url)
        self.port = parts.port or (443 if self.tls is not None else 80)
        self.prefix = parts.path.rstrip("/")
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls is not None else 80
        self.authority = name if self.port == default else f"{name}:{self.port}"
        self.headers = headers
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        writer = self._conn[1] if self._conn is not None else None
        self.close()
        if writer is not None:  # (its socket is closed on the loop's next turns)
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1):
                    await writer.wait_closed()

    async def get(
        self, path: str, *, params: dict[str, str | int], headers: dict[str, str]
    ) -> Reply:
        return await self.request("GET", f"{path}?{urlencode(params)}", b"", headers)

    async def post_json(self, path: str, body: object) -> Reply:
        content = json.dumps(body, separators=(",", ":")).encode()
        return await self.request("POST", path, content, {"Content-Type": "application/json"})

    async def request(
        self, method: str, target: str, body: bytes, headers: dict[str, str]
    ) -> Reply:
        """Raises `ControlError` when no whole answer came."""
        head = self._head(method, target, body, headers)
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    return await self._exchange(head, body)
                except _Stale:
                    return await self._exchange(head, body, fresh=True)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, _Stale) as e:
            self.close()
            raise ControlError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e
        except (ValueError, asyncio.LimitOverrunError) as e:
            self.close()
            raise ControlError(f"not an HTTP answer ({e})") from e

    def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None

    def _head(self, method: str, target: str, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"{method} {self.prefix}{target} HTTP/1.1", f"Host: {self.authority}"]
        lines += [f"{k}: {v}" for k, v in {**self.headers, **headers}.items()]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _exchange(self, head: bytes, body: bytes, *, fresh: bool = False) -> Reply:
        reused = self._conn is not None and not fresh
        if not reused:
            self.close()
            # (`asyncio.timeout`, not `wait_for`: in 3.11 a `wait_for` cancelled as its
            # connection is refused returns the refusal and loses the cancellation, and the
            # router's long poll then never stops)
            async with asyncio.timeout(self.connect_timeout):
                self._conn = await asyncio.open_connection(
                    self.host, self.port, ssl=self.tls, limit=HEAD_LIMIT
                )
        assert self._conn is not None
        reader, writer = self._conn
        try:
            writer.write(head + body)
            await writer.drain()
            first = await reader.readuntil(b"\r\n")
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            if reused and not getattr(e, "partial", b""):
                raise _Stale from e
            raise
        reply, keep = await _answer(first, reader)
        if not keep:
            self.close()
        return reply


async def _answer(first: bytes, reader: asyncio.StreamReader) -> tuple[Reply, bool]:
    """The answer whose status line is `first`, and whether the connection stays usable."""
    version, _, rest = first.decode("latin-1").partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"status line {first[:80]!r}")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if status in (204, 304) or status < 200:
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _chunked(reader)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:  # (the body ends with the connection)
        body, keep = await reader.read(), False
    return Reply(status, headers, body), keep


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass  # (trailers)
    return b"".join(parts)
