"""Reading a request's head into its exchange, strictly: the parser callbacks of the head, as a
base of the client's connection (`downstream.DownstreamConnection`), so llhttp calls them as
directly as before they had a module of their own.

Request smuggling is refused before anything reaches an upstream: the parser (llhttp, strict)
rejects conflicting or duplicate Content-Length, Content-Length with Transfer-Encoding, bad chunk
sizes and obsolete line folding; we add the checks it leaves to us (HTTP/0.9 request lines, a
Transfer-Encoding other than `chunked`, a second Host, the header size limit). An error raised
here stops the parser; the connection answers it with a 4xx and closes, so no second request can
hide behind it.
"""

from __future__ import annotations

import httptools

from sandboxd_router import target
from sandboxd_router.cork import Corkable
from sandboxd_router.errors import Refusal
from sandboxd_router.exchange import Exchange
from sandboxd_router.state import RouterState


class Intake(Corkable):
    state: RouterState
    parser: httptools.HttpRequestParser | None
    parsing: Exchange | None  # the request whose head or body is being read
    http11: bool  # the last request's version: HTTP/1.1 (else 1.0)
    cookie: bool  # the request being read may have a preview cookie (`sandboxd_router.preview`)
    _head_bytes: int

    def on_url(self, url: bytes) -> None:
        assert self.parsing is not None
        self.parsing.target += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.parsing
        assert ex is not None
        self._count(len(name) + len(value) + 4)
        lower = name.lower()
        ex.head.add(name, value, lower)
        if lower == b"baggage":
            ex.baggage.append(value)
        elif lower == b"host":
            if ex.host is not None:  # RFC 9112 §3.2: which one would the upstream believe?
                raise httptools.HttpParserError("more than one Host header")
            ex.host = value
        elif lower == b"content-length":
            ex.content_length = value
        elif lower == b"transfer-encoding":
            if ex.chunked or value.strip().lower() != b"chunked":
                raise httptools.HttpParserError("unsupported Transfer-Encoding (only chunked)")
            ex.chunked = True
        elif lower == b"mcp-session-id":
            ex.session = value
        elif lower == b"traceparent":
            ex.traceparent = value
        elif lower == b"mcp-protocol-version":
            ex.protocol = value
        elif lower == b"cookie" and value.find(b"sandboxd-preview") >= 0:
            self.cookie = True  # (perhaps: `preview.take_cookie` reads it)

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.state.limits.max_header_bytes:
            raise Refusal(431, "bad_request", "request headers are larger than the limit")

    def _head_read(self, ex: Exchange, parser: httptools.HttpRequestParser) -> None:
        """The head is whole (`on_headers_complete`): check what llhttp leaves to us."""
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise httptools.HttpParserError(f"HTTP/{version} is not supported")
        self.http11 = version == "1.1"
        ex.method = parser.get_method()
        ex.keep_alive = parser.should_keep_alive()
        if ex.host is None and self.http11:
            raise httptools.HttpParserError("an HTTP/1.1 request needs a Host header")
        if not ex.target.startswith(b"/"):
            _other_form(ex)


def has_body(ex: Exchange) -> bool:
    return ex.chunked or (ex.content_length is not None and ex.content_length != b"0")


def _other_form(ex: Exchange) -> None:
    """An absolute-form target goes upstream origin-form, its authority standing in for Host
    (RFC 9112 §3.2.2); `OPTIONS *` passes; anything else is refused."""
    if ex.target == b"*" and ex.method == b"OPTIONS":
        return
    parts = target.origin_form(ex.target)
    if parts is None:
        raise httptools.HttpParserError("the request target is neither /path nor http://…")
    ex.host, ex.target = parts
