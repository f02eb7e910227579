"""What the API needs from the rest of the control plane, injected at startup."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Protocol

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sandboxd.core.catalog import Catalog
from sandboxd.core.clock import rfc3339, utcnow
from sandboxd.core.tokens import (
    ADMIN,
    ROUTER,
    Caller,
    OutOfScope,
    Scope,
    check_sandbox,
    hash_token,
)
from sandboxd.errors import Forbidden, SandboxdError
from sandboxd.metrics import Metrics
from sandboxd.routebook import RouteBook
from sandboxd.settings import Settings
from sandboxd.store.repository import Store
from sandboxd.store.tables import AuditRow, SandboxRow


class Kicker(Protocol):
    def kick(self, name: str) -> None: ...


class LogChunkLike(Protocol):
    @property
    def data(self) -> bytes: ...
    @property
    def next_offset(self) -> int: ...


class LogSource(Protocol):
    async def read_log(
        self, name: str, service: str, *, offset: int | None, tail: int | None
    ) -> LogChunkLike | None: ...

    def no_log(self, name: str, service: str) -> str: ...


class AuditSink(Protocol):
    def add(self, call: AuditRow) -> None: ...

    async def flush(self) -> None: ...


MAX_LONG_POLLS = 256
"""Route-table long polls held at once. Routers hold one each; beyond this a poll gets 429
(routers back off and retry), so a token holder cannot pin sockets and tasks without bound."""


@dataclass
class Gate:
    """A count of requests held open, refused (not queued) at the limit."""

    limit: int
    held: int = 0

    def try_enter(self) -> bool:
        if self.held >= self.limit:
            return False
        self.held += 1
        return True

    def leave(self) -> None:
        self.held -= 1


@dataclass
class AppState:
    settings: Settings
    store: Store
    catalog: Catalog
    routes: RouteBook
    metrics: Metrics
    kicker: Kicker
    logs: LogSource
    reconciler_alive: Callable[[], bool]
    admin_hashes: set[str] = field(default_factory=set)
    """The admin token's (from the settings or the data dir; any other is in the store)."""
    route_reader_hashes: set[str] = field(default_factory=set)
    """Router tokens: they may read the route table and post reports, nothing else."""
    long_polls: Gate = field(default_factory=lambda: Gate(MAX_LONG_POLLS))
    audit: AuditSink | None = None
    """Where each API call is recorded (`sandboxd.api.audit`)."""
    view_key: bytes = b""
    """Signs the web page's links (`links.page`) and sign-in sessions; empty: no links."""
    preview_key: bytes = b""
    """Derives the preview tokens (`sandboxd.core.preview`); empty: no preview links."""


ROUTER_CALLS = frozenset(
    {("GET", "/v1/routes"), ("POST", "/v1/router-reports"), ("POST", "/v1/router-signals")}
)
"""All a router token may do: a leaked router token reads routes and raises counts, no more."""


class Unauthorized(SandboxdError):
    code = "unauthorized"


async def get_state(request: Request) -> AppState:
    """Coroutines, like `require_token`: FastAPI runs a plain function dependency in a worker
    thread, two thread hops per call that wait for the GIL while a post is being ingested."""
    state: AppState = request.app.state.sandboxd
    return state


StateDep = Annotated[AppState, Depends(get_state)]
_bearer = HTTPBearer(auto_error=False, description="The admin token (see the README).")


async def require_token(
    state: StateDep,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Caller:
    """Who calls, from the bearer token; refuses a token outside what it may call. (The
    caller is also kept on the request, for the audit log.)"""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    hashed = hash_token(credentials.credentials)
    if hashed in state.admin_hashes:
        caller = Caller(ADMIN)
    elif hashed in state.route_reader_hashes:
        caller = Caller(ROUTER, router=True)
        if (request.method, request.url.path) not in ROUTER_CALLS:
            raise HTTPException(
                403,
                "this router token may only GET /v1/routes and POST /v1/router-reports and "
                "/v1/router-signals",
            )
    else:
        caller = await _scoped(state, hashed)
        request.state.caller = caller
        if not _scoped_call(request.method, request.url.path):
            raise Forbidden(
                f"token {caller.name!r} may only call /v1/sandboxes (its own: labelled "
                f"{caller.scope}) and GET /v1/services"
            )
    request.state.caller = caller
    return caller


async def _scoped(state: AppState, hashed: str) -> Caller:
    row = await state.store.token(hashed)
    if row is None or row.scope is None:
        raise Unauthorized("invalid token")
    if row.expires_at is not None and row.expires_at <= utcnow():
        raise Unauthorized(f"token {row.name!r} expired at {rfc3339(row.expires_at)}")
    return Caller(row.name, Scope.parse(row.scope))


def _scoped_call(method: str, path: str) -> bool:
    return (
        path == "/v1/sandboxes"
        or path.startswith("/v1/sandboxes/")
        or (method == "GET" and path == "/v1/services")
    )


CallerDep = Annotated[Caller, Depends(require_token)]


def check_access(caller: Caller, row: SandboxRow) -> None:
    """Forbidden unless `caller` may touch the sandbox of `row` (a scoped token: only one
    labelled with its scope)."""
    try:
        check_sandbox(caller, row.name, row.labels)
    except OutOfScope as e:
        raise Forbidden(str(e), sandbox=row.name) from e
