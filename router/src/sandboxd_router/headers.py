"""Header rules of a faithful HTTP/1.1 proxy: what crosses, what is re-framed, what is added.

Hop-by-hop headers (RFC 9110 §7.6.1) are dropped in both directions, along with every header
that a `Connection` header names; repeated headers keep their order; everything else —
`traceparent`, `tracestate`, `baggage`, cookies, MCP headers — passes byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable

HOP_BY_HOP = frozenset(
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
CRLF = b"\r\n"

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


def request_head(
    method: bytes,
    target: bytes,
    headers: list[Header],
    *,
    authority: bytes,
    extra_hop: frozenset[bytes],
    forwarded_for: bytes,
    original_host: bytes | None,
    framing: bytes,
) -> bytes:
    """The request head for the upstream. `framing` is b"" (no body), a Content-Length header
    line, or b"Transfer-Encoding: chunked\\r\\n"."""
    out = [method, b" ", target, b" HTTP/1.1\r\nHost: ", authority, CRLF]
    xff = None
    has_proto = has_fhost = False
    for name, value in headers:
        lower = name.lower()
        if (
            lower in HOP_BY_HOP
            or lower in extra_hop
            or lower == b"host"
            or lower == b"content-length"
        ):
            continue
        if lower == b"x-forwarded-for":
            xff = value if xff is None else xff + b", " + value
            continue
        if lower == b"x-forwarded-proto":
            has_proto = True
        elif lower == b"x-forwarded-host":
            has_fhost = True
        out += (name, b": ", value, CRLF)
    out += (
        b"X-Forwarded-For: ",
        forwarded_for if xff is None else xff + b", " + forwarded_for,
        CRLF,
    )
    if not has_proto:
        out.append(b"X-Forwarded-Proto: http\r\n")
    if not has_fhost and original_host:
        out += (b"X-Forwarded-Host: ", original_host, CRLF)
    out += (framing, CRLF)
    return b"".join(out)


def response_head(
    status: int,
    reason: bytes,
    headers: list[Header],
    *,
    route: bytes,
    extra_hop: frozenset[bytes],
    framing: bytes,
    close: bool,
) -> bytes:
    """The response head for the client. With `framing` empty the upstream's own
    Content-Length (if any) passes; otherwise the body is re-framed and it is dropped."""
    out = [b"HTTP/1.1 ", str(status).encode(), b" ", reason, CRLF]
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in extra_hop or (framing and lower == b"content-length"):
            continue
        out += (name, b": ", value, CRLF)
    out += (b"sandboxd-route: ", route, CRLF, framing)
    if close:
        out.append(b"Connection: close\r\n")
    out.append(CRLF)
    return b"".join(out)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"


def content_length(n: int | bytes) -> bytes:
    return b"Content-Length: " + (n if isinstance(n, bytes) else str(n).encode()) + CRLF
