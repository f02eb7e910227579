"""The web page (issue 15): `GET /s/{name}` and its live updates, `GET /` and sign-in, the
static files. HTML for people, outside `/v1` and its bearer tokens (`sandboxd.web.access`
says who may see what); not in the OpenAPI document.

Every answer is a page, refusals too: 404 (no sandbox of that name), 410 (deleted), 403 (no
valid link or session for it), never JSON or a traceback; only the polling endpoint
(`/s/{name}/state`, for page.js) answers JSON.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from sandboxd.api.deps import AppState, Gate, StateDep
from sandboxd.core.capability import BadToken, check_view
from sandboxd.core.clock import rfc3339
from sandboxd.core.naming import is_sandbox_name
from sandboxd.core.phases import Phase
from sandboxd.store.tables import SandboxRow
from sandboxd.web import access, live
from sandboxd.web.facts import gather
from sandboxd.web.render import FORM_HEADERS, HEADERS, Pages

log = logging.getLogger(__name__)


class PageRoute(APIRoute):
    """A page's route: an error nobody expected is a plain 500 page too (and the traceback
    goes to the server's log), not the API's JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except (HTTPException, RequestValidationError):
                raise  # the API's own answers (405, 422) stay as they are
            except Exception:
                log.exception("unhandled error on %s", request.url.path)
                return server_error(request.app.state.web)

        return guarded


router = APIRouter(include_in_schema=False, route_class=PageRoute)
MAX_STREAMS = 256
"""Live pages open at once; beyond, a page falls back to polling (503 to its stream)."""
MAX_TOKEN_FIELD = 512
STREAM_HEADERS = {**live.HEADERS, "X-Content-Type-Options": "nosniff"}
SIGN_IN_HINT = "Open the link on the pull request again, or sign in with a token."


class Web:
    """What the pages need besides the API's state: templates, assets, the open streams."""

    def __init__(self) -> None:
        self.pages = Pages()
        self.streams = Gate(MAX_STREAMS)
        self.shared = live.Shared()
        self.stopping = asyncio.Event()

    def close(self) -> None:
        """The server is stopping: end every live page's stream now (browsers reconnect to
        the next server, with their last event id)."""
        self.stopping.set()


def install(app: FastAPI) -> None:
    app.state.web = Web()
    app.include_router(router)


async def _web(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


WebDep = Annotated[Web, Depends(_web)]


def _page(
    web: Web, template: str, *, code: int = 200, headers: dict[str, str] = HEADERS, **context: Any
) -> HTMLResponse:
    return HTMLResponse(web.pages.render(template, **context), code, headers=headers)


def _problem(web: Web, code: int, heading: str, message: str, hint: str = "") -> HTMLResponse:
    context: dict[str, Any] = {"status": code, "heading": heading, "message": message, "hint": hint}
    return _page(web, "problem", code=code, title=heading, **context)


def server_error(web: Web) -> HTMLResponse:
    return _problem(
        web, 500, "Something went wrong", "sandboxd could not show this page; its log says why."
    )


def _not_found(web: Web, name: str) -> HTMLResponse:
    return _problem(web, 404, "No such sandbox", f"There is no sandbox called {name!r}.")


def _gone(web: Web, name: str) -> HTMLResponse:
    return _problem(
        web, 410, "Sandbox deleted", f"The sandbox {name!r} was deleted; its forks are gone."
    )


def _refused(web: Web, message: str) -> HTMLResponse:
    return _problem(web, 403, "Not allowed", message, SIGN_IN_HINT)


async def _sees(state: AppState, request: Request, row: SandboxRow) -> bool:
    """A view capability for this sandbox (its cookie), or a session whose token may."""
    token = request.cookies.get(access.VIEW_COOKIE)
    if token and state.view_key:
        try:
            check_view(state.view_key, token, name=row.name, uid=row.uid, now=time.time())
            return True
        except BadToken:
            pass
    caller = await access.signed_in(state, request)
    return caller is not None and access.sees(caller, row)


async def _row(state: AppState, web: Web, request: Request, name: str) -> SandboxRow | HTMLResponse:
    """The sandbox the request may see, or the page that says why not."""
    row = await state.store.get(name) if is_sandbox_name(name) else None
    if row is None:
        return _not_found(web, name)
    if not await _sees(state, request, row):
        return _refused(web, f"This browser holds no valid link to the sandbox {name!r}.")
    return row


@router.get("/s/{name}", response_class=HTMLResponse)
async def sandbox_page(state: StateDep, web: WebDep, request: Request, name: str) -> Response:
    view = request.query_params.get("view")
    if view is not None:
        return await _open_link(state, web, name, view)
    row = await _row(state, web, request, name)
    if isinstance(row, Response):
        return row
    if row.phase == Phase.DELETED:
        return _gone(web, name)
    facts = await gather(state, row)
    sections = web.pages.sections(facts)
    html = web.pages.page(facts, sections, event_id=live.event_id(sections))
    return HTMLResponse(html, headers=HEADERS)


async def _open_link(state: AppState, web: Web, name: str, token: str) -> Response:
    """Keep a link's capability in a cookie for this page only, and send the browser to the
    clean URL: the capability leaves the address bar and the history."""
    row = await state.store.get(name) if is_sandbox_name(name) else None
    if row is None:
        return _not_found(web, name)
    try:
        expires = check_view(state.view_key, token, name=name, uid=row.uid, now=time.time())
    except BadToken as e:
        return _refused(web, f"This link does not open the sandbox {name!r}: {e}.")
    response = RedirectResponse(f"/s/{name}", 303, headers=HEADERS)
    access.set_view_cookie(response, state, name=name, token=token, expires=expires)
    return response


@router.get("/s/{name}/events")
async def sandbox_events(state: StateDep, web: WebDep, request: Request, name: str) -> Response:
    """The page's live updates (`sandboxd.web.live`)."""
    row = await _row(state, web, request, name)
    if isinstance(row, Response):
        return row
    if row.phase == Phase.DELETED:
        return _gone(web, name)
    since = live.known(request.headers.get("last-event-id") or request.query_params.get("since"))
    if not web.streams.try_enter():
        return _problem(web, 503, "Busy", "Too many live pages are open; this one polls.")
    uid = row.uid

    async def render() -> live.Seen:
        now = await state.store.get(name)
        if now is None or now.uid != uid:
            return live.Seen(None)
        facts = await gather(state, now)
        return live.Seen(web.pages.sections(facts), gone=now.phase == Phase.DELETED)

    async def look() -> live.Seen:
        row = await state.store.get(name)
        if row is None or row.uid != uid or not await _sees(state, request, row):
            return live.Seen(None)
        return await web.shared.look(f"{name}/{uid}", render)

    async def events() -> AsyncIterator[bytes]:
        try:
            async for chunk in live.stream(look, since, stop=web.stopping):
                yield chunk
        finally:
            web.streams.leave()

    return StreamingResponse(events(), media_type="text/event-stream", headers=STREAM_HEADERS)


@router.get("/s/{name}/state")
async def sandbox_state(state: StateDep, web: WebDep, request: Request, name: str) -> Response:
    """What page.js polls when server-sent events do not reach it: the sections that differ
    from `since` (an event id), as JSON, with `"gone": true` once deleted (a 200 still: a
    browser logs every 4xx of a fetch as a console error)."""
    row = await _row(state, web, request, name)
    if isinstance(row, Response):
        code = row.status_code
        error = {404: "not_found", 403: "forbidden"}.get(code, "unavailable")
        return JSONResponse({"error": error, "message": "reload the page"}, code, headers=HEADERS)
    facts = await gather(state, row)
    body = live.update(web.pages.sections(facts), live.known(request.query_params.get("since")))
    body["gone"] = row.phase == Phase.DELETED
    return JSONResponse(body, headers={**HEADERS, "Cache-Control": "no-cache"})


@router.get("/", response_class=HTMLResponse)
async def index(state: StateDep, web: WebDep, request: Request) -> Response:
    """The sandboxes the signed-in token may see; the sign-in form otherwise."""
    caller = await access.signed_in(state, request)
    if caller is None:
        return _page(web, "signin", headers=FORM_HEADERS, title="Sign in", error="")
    rows = [r for r in await state.store.sandboxes() if access.sees(caller, r)]
    shown = [
        {"name": r.name, "phase": r.phase, "labels": r.labels, "expires_at": rfc3339(r.expires_at)}
        for r in rows
    ]
    scope = str(caller.scope) if caller.scope else ""
    context: dict[str, Any] = {"viewer": caller.name, "scope": scope, "rows": shown}
    return _page(web, "index", headers=FORM_HEADERS, title="Sandboxes", **context)


@router.post("/signin", response_class=HTMLResponse)
async def sign_in(state: StateDep, web: WebDep, request: Request) -> Response:
    if not access.same_site(state, request):
        return _problem(web, 403, "Not allowed", "A sign-in must come from this site's form.")
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=8)
    token = (form.get("token") or [""])[0].strip()
    signed = await access.sign_in(state, token) if 0 < len(token) <= MAX_TOKEN_FIELD else None
    if signed is None:
        error = "That token cannot sign in (unknown, expired or revoked, or a router's)."
        return _page(web, "signin", code=403, headers=FORM_HEADERS, title="Sign in", error=error)
    response = RedirectResponse("/", 303, headers=HEADERS)
    access.set_session_cookie(response, state, signed[1])
    return response


@router.post("/signout", response_class=HTMLResponse)
async def sign_out(state: StateDep, web: WebDep, request: Request) -> Response:
    if not access.same_site(state, request):
        return _problem(web, 403, "Not allowed", "A sign-out must come from this site's form.")
    response = RedirectResponse("/", 303, headers=HEADERS)
    access.set_session_cookie(response, state, None)
    return response


@router.get("/static/{file}")
async def static(web: WebDep, request: Request, file: str) -> Response:
    """page.css, page.js and icon.svg: cached for a year under their URL's content hash (`?v=`, what
    the pages link to), revalidated by ETag otherwise."""
    asset = web.pages.assets.get(file)
    if asset is None:
        return Response("not found\n", 404, media_type="text/plain")
    etag = f'"{asset.digest}"'
    fresh = request.query_params.get("v") == asset.digest
    headers = {
        "ETag": etag,
        "Cache-Control": "public, max-age=31536000, immutable" if fresh else "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)
