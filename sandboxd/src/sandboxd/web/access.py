"""Who may see a page: a view capability for that one sandbox, or a signed-in token.

Two cookies, both HttpOnly and SameSite=Lax (the link is clicked on github.com, so Strict would
drop it on that first navigation), Secure when the public URL is https:

- `sandboxd-view`, scoped `Path=/s/<name>`: the capability of that sandbox's link, kept after
  the link was opened so that the capability leaves the address bar. Another sandbox's page
  never receives it, and it is no bearer token: `/v1` reads only `Authorization`.
- `sandboxd-session`, `Path=/`: a signed session of the token that signed in
  (`sandboxd.core.capability`). The token is looked up on every request, so a revoked or
  expired one stops working at once; the admin's is compared with the admin token in use.

A sign-in or sign-out (a form POST) must come from this site: its `Origin` (or, without one,
its `Referer`) must be the public URL's or the request's own host.
"""

from __future__ import annotations

import time
from datetime import datetime
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from sandboxd.api.deps import AppState
from sandboxd.core.capability import BadToken, fingerprint, mint_session, read_session
from sandboxd.core.clock import utcnow
from sandboxd.core.tokens import ADMIN, Caller, Scope, hash_token
from sandboxd.store.tables import SandboxRow

VIEW_COOKIE = "sandboxd-view"
SESSION_COOKIE = "sandboxd-session"
SESSION_SECONDS = 12 * 3600


def secure(state: AppState) -> bool:
    return state.settings.effective_public_url.startswith("https://")


def set_view_cookie(
    response: Response, state: AppState, *, name: str, token: str, expires: int
) -> None:
    """Kept until the capability expires (a capability outlives its sandbox)."""
    response.set_cookie(
        VIEW_COOKIE,
        token,
        max_age=max(0, int(expires - time.time())),
        path=f"/s/{name}",
        httponly=True,
        samesite="lax",
        secure=secure(state),
    )


async def sign_in(state: AppState, token: str) -> tuple[Caller, str] | None:
    """The caller `token` is and its session cookie's value; None for a token that may not
    sign in (unknown, expired, or the router's)."""
    hashed = hash_token(token)
    if hashed in state.admin_hashes:
        caller = Caller(ADMIN)
    else:
        row = await state.store.token(hashed)
        if row is None or row.scope is None or _expired(row.expires_at):
            return None
        caller = Caller(row.name, Scope.parse(row.scope))
    expires = int(time.time()) + SESSION_SECONDS
    value = mint_session(state.view_key, token_name=caller.name, token_hash=hashed, expires=expires)
    return caller, value


def set_session_cookie(response: Response, state: AppState, value: str | None) -> None:
    """`value` None clears it."""
    response.set_cookie(
        SESSION_COOKIE,
        value or "",
        max_age=SESSION_SECONDS if value else 0,
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure(state),
    )


async def signed_in(state: AppState, request: Request) -> Caller | None:
    """The token whose session the request carries, if it still is valid."""
    value = request.cookies.get(SESSION_COOKIE)
    if not value or not state.view_key:
        return None
    try:
        session = read_session(state.view_key, value, now=time.time())
    except BadToken:
        return None
    if session.token_name == ADMIN:
        admin = any(fingerprint(h) == session.fingerprint for h in state.admin_hashes)
        return Caller(ADMIN) if admin else None
    row = await state.store.token_named(session.token_name)
    if row is None or row.scope is None or _expired(row.expires_at):
        return None
    if fingerprint(row.token_hash) != session.fingerprint:
        return None  # revoked and made again under the same name
    return Caller(row.name, Scope.parse(row.scope))


def sees(caller: Caller, row: SandboxRow) -> bool:
    return caller.scope is None or caller.scope.holds(row.labels)


def same_site(state: AppState, request: Request) -> bool:
    """Whether a form POST comes from a page of this site (CSRF: another site's form sends
    its own origin; a browser always sends `Origin` on a cross-site POST)."""
    origin = request.headers.get("origin") or _origin_of(request.headers.get("referer", ""))
    if not origin or origin == "null":
        return False
    host = request.headers.get("host", "")
    allowed = {_origin_of(state.settings.effective_public_url), f"{request.url.scheme}://{host}"}
    return origin.rstrip("/") in allowed


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def _expired(moment: datetime | None) -> bool:
    return moment is not None and moment <= utcnow()
