"""Header rules of a faithful HTTP/1.1 proxy: what crosses, what is re-framed, what is added.

Hop-by-hop headers (RFC 9110 §7.6.1) are dropped in both directions, along with every header
that a `Connection` header names; repeated headers keep their order; everything else —
`traceparent`, `tracestate`, `baggage`, cookies, MCP headers — passes byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
CRLF: Final = b"\r\n"
# the only tokens that name no header
CONNECTION_OPTIONS: Final = frozenset({b"keep-alive", b"close"})

Header = tuple[bytes, bytes]


def named_by_connection(values: Iterable[bytes]) -> frozenset[bytes]:
    """Header names listed in `Connection` header values (they are hop-by-hop too)."""
    names = set()
    for value in values:
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                names.add(token)
    return frozenset(names)


class RequestHeaders:
    """A client request's headers, sorted in one pass as the parser reports them (the caller
    has lowered the name already): the lines an upstream will get, formatted once."""

    __slots__ = ("forwarded_for", "lines", "names", "proto", "tokens", "xhost")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.names: list[bytes] = []
        self.tokens: list[bytes] | None = None
        self.forwarded_for: bytes | None = None
        self.proto = False
        self.xhost = False

    def add(self, name: bytes, value: bytes, lower: bytes) -> None:
        if lower in HOP_BY_HOP:
            if lower == b"connection" and value.strip().lower() not in CONNECTION_OPTIONS:
                self.tokens = [*(self.tokens or ()), value]  # names more hop-by-hop headers
            return
        if lower == b"host" or lower == b"content-length":  # we set both
            return
        if lower == b"x-forwarded-for":
            prior = self.forwarded_for
            self.forwarded_for = value if prior is None else prior + b", " + value
            return
        if lower == b"x-forwarded-proto":
            self.proto = True
        elif lower == b"x-forwarded-host":
            self.xhost = True
        self.lines.append(name + b": " + value + CRLF)
        self.names.append(lower)

    def values(self, lower: bytes) -> list[bytes]:
        """The values of the headers named `lower` (a lowered name), left in place."""
        return [
            line.split(b":", 1)[1].strip()
            for line, name in zip(self.lines, self.names, strict=True)
            if name == lower
        ]

    def take(self, lower: bytes) -> list[bytes]:
        """Remove the headers named `lower` (a lowered name) and return their values: for a
        header the router answers itself (`Expect: 100-continue` on a body it reads first)."""
        found = [i for i, name in enumerate(self.names) if name == lower]
        values = [self.lines[i].split(b":", 1)[1].strip() for i in found]
        if found:
            keep = [i for i in range(len(self.names)) if i not in found]
            self.lines = [self.lines[i] for i in keep]
            self.names = [self.names[i] for i in keep]
        return values

    def render(
        self,
        method: bytes,
        target: bytes,
        *,
        authority: bytes,
        client: bytes,
        original_host: bytes | None,
        framing: bytes,
    ) -> bytes:
        """The request head for the upstream. `framing` is b"" (no body), a Content-Length
        line, or the chunked Transfer-Encoding line."""
        lines = self.lines
        extra = named_by_connection(self.tokens) - CONNECTION_OPTIONS if self.tokens else None
        if extra:
            lines = [line for line, n in zip(lines, self.names, strict=True) if n not in extra]
        prior = self.forwarded_for
        parts = [method, b" ", target, b" HTTP/1.1\r\nHost: ", authority, CRLF, *lines]
        parts += (b"X-Forwarded-For: ", client if prior is None else prior + b", " + client, CRLF)
        if not self.proto:
            parts.append(b"X-Forwarded-Proto: http\r\n")
        if not self.xhost and original_host:
            parts += (b"X-Forwarded-Host: ", original_host, CRLF)
        parts += (framing, CRLF)
        return b"".join(parts)


class ResponseHeaders:
    """An upstream response's headers, sorted in one pass as the parser reports them: the lines
    the client will get (formatted once), and the few facts the router needs (framing, MCP
    session). Repeated headers keep their order."""

    __slots__ = ("chunked", "length", "lines", "names", "session", "tokens")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.names: list[bytes] = []
        self.length: bytes | None = None
        self.chunked = False
        self.tokens: list[bytes] | None = None
        self.session: bytes | None = None

    def add(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower in HOP_BY_HOP:
            if lower == b"transfer-encoding":
                self.chunked = value.lower().rstrip().endswith(b"chunked")
            elif lower == b"connection" and value.strip().lower() not in CONNECTION_OPTIONS:
                self.tokens = [*(self.tokens or ()), value]  # names more hop-by-hop headers
            return
        if lower == b"content-length":
            self.length = value
            return
        if lower == b"mcp-session-id":
            self.session = value
        elif lower == b"set-cookie" and _router_cookie(value):
            return  # the router's own (`sandboxd_router.preview`): no service may set it
        self.lines.append(name + b": " + value + CRLF)
        self.names.append(lower)

    def value(self, name: bytes) -> bytes | None:
        """The last value of the header `name` (lower case), found by a scan: for the rare
        response that is rewritten, not for every response."""
        found = None
        for line, n in zip(self.lines, self.names, strict=True):
            if n == name:
                found = line.split(b":", 1)[1].strip()
        return found

    def render(
        self, status: int, reason: bytes, *, route: bytes, framing: bytes, close: bool
    ) -> bytes:
        """The head for the client. With `framing` empty the upstream's Content-Length (if any)
        passes; otherwise the body is re-framed."""
        lines = self.lines
        extra = named_by_connection(self.tokens) - CONNECTION_OPTIONS if self.tokens else None
        if extra:  # headers the upstream's Connection header named are hop-by-hop too
            lines = [line for line, n in zip(lines, self.names, strict=True) if n not in extra]
        parts = [status_line(status, reason), *lines]
        if not framing and self.length is not None:
            parts += (b"Content-Length: ", self.length, CRLF)
        parts += (b"sandboxd-route: ", route, CRLF, framing)
        if close:
            parts.append(b"Connection: close\r\n")
        parts.append(CRLF)
        return b"".join(parts)


ROUTER_COOKIES: Final = (b"sandboxd-preview", b"__Host-sandboxd-preview")


def _router_cookie(set_cookie: bytes) -> bool:
    """A `Set-Cookie` value that names a cookie of the router's (as a browser reads the name:
    up to the first `=`, trimmed)."""
    return set_cookie.split(b"=", 1)[0].strip(b" \t") in ROUTER_COOKIES


_STATUS_LINES: Final[dict[tuple[int, bytes], bytes]] = {}


def status_line(status: int, reason: bytes) -> bytes:
    """The status line (`HTTP/1.1 200 OK` and CRLF), formatted once per status and reason."""
    line = _STATUS_LINES.get((status, reason))
    if line is None:
        line = b"HTTP/1.1 %d %b\r\n" % (status, reason)
        if len(_STATUS_LINES) < 256:
            _STATUS_LINES[(status, reason)] = line
    return line


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"


def content_length(n: int | bytes) -> bytes:
    return b"Content-Length: " + (n if isinstance(n, bytes) else str(n).encode()) + CRLF
