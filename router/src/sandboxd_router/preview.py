"""Preview links and the preview cookie (issue 15; DESIGN §6, step 4 of "Which sandbox").

A browser cannot send `baggage`. A preview link, `/.sandboxd/preview/<token>?next=<path>` on
any listener, is answered by the router itself: a 303 to `next` that sets the cookie
`sandboxd-preview=<token>`. The token is not the routing key: the route table maps it to the
sandbox (`Table.previews`), so a deleted sandbox's token routes nowhere. A request with the
cookie and no explicit key (`baggage`, `params._meta`) is routed as that sandbox's, and the
router adds `sandbox=<key>` to the `baggage` it forwards, so the service passes it on.

The router's own cookies never reach a service: they are cut out of every `Cookie` header
(the other cookies stay byte for byte), and an upstream `Set-Cookie` that uses their names is
dropped (`headers.ResponseHeaders`). `/.sandboxd/preview/exit`, and `?sandboxd-preview=off`
on any GET or HEAD that has the cookie, clear the cookie with a 303 (to `next`, or to the same
URL without that parameter); a cookie whose token is not live gets the baseline and a clearing
`Set-Cookie`, on every kind of service (an MCP session keeps its route, not that line).

The router's own answers are recorded as any request is (`answered`): the listener's service,
the route their `sandboxd-route` says, status 303; a link's path without its token.

HTTPS: the router has no TLS listener of its own, so it is behind HTTPS when the request's
first `X-Forwarded-Proto` says `https` (set by the TLS terminator in front of it). Then the
cookie is `__Host-sandboxd-preview`, `Secure`. A client that forges the header only gets a
cookie its own browser refuses over plain HTTP: nothing for anyone else.

`next` is a relative path only: it must start with one `/` and hold printable ASCII without
a backslash (browsers read `/\\host` as `//host`); anything else becomes `/`.

Nothing here runs for a request whose `Cookie` header does not hold `sandboxd-preview` and
whose target is not ours: the hot path pays a search of the Cookie header (`intake`), a test of
a flag and one of the target's second byte (`downstream.DownstreamConnection`).
"""

from __future__ import annotations

import time
from typing import Final
from urllib.parse import unquote_to_bytes

from sandboxd_router.headers import CRLF, RequestHeaders
from sandboxd_router.table import FORWARD, Decision, Route, Service, Table

COOKIE: Final = b"sandboxd-preview"
HOST_COOKIE: Final = b"__Host-sandboxd-preview"  # behind HTTPS
PREFIX: Final = b"/.sandboxd/"
LINK: Final = b"/.sandboxd/preview/"
EXIT: Final = b"exit"
OFF: Final = b"sandboxd-preview=off"
MAX_TOKEN: Final = 64
MAX_NEXT: Final = 2048
_TOKEN_BYTES: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_DOT: Final = 0x2E  # "." of "/.sandboxd/"
_ATTRIBUTES: Final = b"; Path=/; HttpOnly; SameSite=Lax"
RECORDED_LINK: Final = LINK + b"-"  # a link's path as recorded: its token is a capability


def ours(target: bytes) -> bool:
    """The target is a preview link's or the exit's (`?sandboxd-preview=off` needs no test:
    a request without a cookie has nothing to turn off). Its second byte is tested first: a
    bytes method call costs every request some hundreds of instructions."""
    return len(target) > 1 and target[1] == _DOT and target.startswith(PREFIX)


class Preview:
    """What a request's preview cookie and target say."""

    __slots__ = ("answer", "clear", "route", "target")

    def __init__(self, target: bytes) -> None:
        self.answer: bytes | None = None
        """A response the router gives itself (a 303), instead of routing the request."""
        self.route: Route | None = None
        """The live sandbox the cookie names (with an `answer`: the one the link names)."""
        self.target = target
        """The request's target as its record keeps it."""
        self.clear = b""
        """Header lines that clear the cookie (a cookie that names no live sandbox)."""

    @property
    def key(self) -> str | None:
        return self.route.key if self.route is not None else None


def inspect(
    head: RequestHeaders, target: bytes, method: bytes, table: Table, *, close: bool
) -> Preview:
    """Take the router's cookies out of `head`, and decide. `close`: the connection closes
    after this request (said in an answer's head)."""
    found = Preview(target)
    token = take_cookie(head)
    if target.startswith(LINK) and method in (b"GET", b"HEAD"):
        secure = _behind_https(head)
        path, _, query = target[len(LINK) :].partition(b"?")
        location = safe_next(unquote_to_bytes(_param(query, b"next") or b"/"))
        route = None if path == EXIT else _live(table, path.decode("latin-1"))
        cookies = _set(route, secure) if route is not None else _clear(secure)
        label = route.decision if route is not None else b"baseline"
        found.answer = redirect(location, cookies, route=label, close=close)
        found.route = route
        if path != EXIT:
            found.target = RECORDED_LINK
        return found
    secure = _behind_https(head)
    if method in (b"GET", b"HEAD") and target.find(OFF) >= 0:
        path, _, query = target.partition(b"?")
        rest = [p for p in query.split(b"&") if p != OFF]
        location = safe_next(path + (b"?" + b"&".join(rest) if rest else b""))
        found.answer = redirect(location, _clear(secure), route=b"baseline", close=close)
        return found
    if token is not None:
        found.route = _live(table, token.decode("latin-1"))
        if found.route is None:
            found.clear = b"".join(b"\r\nSet-Cookie: " + c for c in _clear(secure))
    return found


def answered(seen: Preview, service: Service | None) -> Decision:
    """The decision an answer of the router's own is recorded with: `service` is the
    listener's (None: no service there), the route the answer's `sandboxd-route` names (a live
    link's sandbox, forked on this service or not: the cookie is for all of them)."""
    route = seen.route
    if route is None:
        return Decision(FORWARD, service)
    return Decision(FORWARD, service, None, route.decision, route.sandbox, route)


def take_cookie(head: RequestHeaders) -> bytes | None:
    """Cut the router's cookies out of the `Cookie` header(s), leaving every other cookie as
    it came (a header left empty goes); the first one's value, or None when there is none."""
    token: bytes | None = None
    lines, names = head.lines, head.names
    gone = []
    for i, name in enumerate(names):
        if name != b"cookie":
            continue
        line = lines[i]
        if line.find(COOKIE) < 0:
            continue  # (the name of each of ours holds it)
        colon = line.index(b":")
        pieces = line[colon + 2 : -2].split(b";")
        kept = []
        for piece in pieces:
            name_, _, value = piece.partition(b"=")
            if name_.strip(b" \t") in (COOKIE, HOST_COOKIE):
                if token is None:
                    token = value.strip(b" \t")
            else:
                kept.append(piece)
        if len(kept) == len(pieces):
            continue
        value = b";".join(kept).strip(b" \t")
        if value:
            lines[i] = line[: colon + 2] + value + CRLF
        else:
            gone.append(i)
    for i in reversed(gone):
        del lines[i]
        del names[i]
    return token


def add_baggage(head: RequestHeaders, member: bytes) -> None:
    """Put `member` first in the request's baggage (within the W3C limits however long the
    rest is), merged into its first `baggage` header, or in a new one."""
    for i, name in enumerate(head.names):
        if name == b"baggage":
            line = head.lines[i]
            colon = line.index(b":")
            rest = line[colon + 1 : -2].strip(b" \t")
            head.lines[i] = line[: colon + 2] + member + (b"," + rest if rest else b"") + CRLF
            return
    head.lines.append(b"baggage: " + member + CRLF)
    head.names.append(b"baggage")


def safe_next(path: bytes) -> bytes:
    """`path` if it is a relative path on this host, else `/`."""
    if (
        not path.startswith(b"/")
        or path[1:2] in (b"/", b"\\")
        or len(path) > MAX_NEXT
        or b"\\" in path
        or any(c < 0x21 or c > 0x7E for c in path)
    ):
        return b"/"
    return path


def redirect(location: bytes, cookies: list[bytes], *, route: bytes, close: bool) -> bytes:
    lines = [b"HTTP/1.1 303 See Other\r\nLocation: ", location, CRLF]
    for cookie in cookies:
        lines += (b"Set-Cookie: ", cookie, CRLF)
    lines.append(
        b"Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nContent-Length: 0\r\n"
    )
    lines += (b"sandboxd-route: ", route, CRLF)
    if close:
        lines.append(b"Connection: close\r\n")
    lines.append(CRLF)
    return b"".join(lines)


def _live(table: Table, token: str) -> Route | None:
    if not 0 < len(token) <= MAX_TOKEN or not _TOKEN_BYTES.issuperset(token.encode()):
        return None
    route = table.previews.get(token)
    if route is None or (route.expires and route.expires <= time.time()):
        return None
    return route


def _set(route: Route, secure: bool) -> list[bytes]:
    """The cookie for `route`'s sandbox; it lasts no longer than the sandbox (a session
    cookie when the table does not say when that is)."""
    name = HOST_COOKIE if secure else COOKIE
    age = b""
    if route.expires:
        age = b"; Max-Age=%d" % max(1, int(route.expires - time.time()))
    flags = b"; Secure" if secure else b""
    return [name + b"=" + route.preview.encode() + age + _ATTRIBUTES + flags]


def _clear(secure: bool) -> list[bytes]:
    """Clearing both names: a browser keeps the one it was given (a `__Host-` one only over
    HTTPS, where it refuses to clear it without `Secure`)."""
    cleared = [COOKIE + b"=; Max-Age=0" + _ATTRIBUTES]
    if secure:
        cleared.append(HOST_COOKIE + b"=; Max-Age=0" + _ATTRIBUTES + b"; Secure")
    return cleared


def _behind_https(head: RequestHeaders) -> bool:
    values = head.values(b"x-forwarded-proto")
    return bool(values) and values[0].split(b",", 1)[0].strip().lower() == b"https"


def _param(query: bytes, name: bytes) -> bytes | None:
    for part in query.split(b"&"):
        key, sep, value = part.partition(b"=")
        if key == name and sep:
            return value
    return None
