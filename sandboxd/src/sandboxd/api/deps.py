"""What the API needs from the rest of the control plane, injected at startup."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Protocol

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sandboxd.core.catalog import Catalog
from sandboxd.errors import SandboxdError
from sandboxd.metrics import Metrics
from sandboxd.routebook import RouteBook
from sandboxd.settings import Settings
from sandboxd.store.repository import Store


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
    token_hashes: set[str] = field(default_factory=set)
    route_reader_hashes: set[str] = field(default_factory=set)
    """Router tokens: they may read the route table and post reports, nothing else."""
    long_polls: Gate = field(default_factory=lambda: Gate(MAX_LONG_POLLS))


ROUTER_CALLS = frozenset(
    {("GET", "/v1/routes"), ("POST", "/v1/router-reports"), ("POST", "/v1/router-signals")}
)
"""All a router token may do: a leaked router token reads routes and raises counts, no more."""


class Unauthorized(SandboxdError):
    code = "unauthorized"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
) -> None:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    hashed = hash_token(credentials.credentials)
    if hashed in state.token_hashes:
        return
    if hashed not in state.route_reader_hashes:
        raise Unauthorized("invalid token")
    if (request.method, request.url.path) not in ROUTER_CALLS:
        raise HTTPException(
            403,
            "this router token may only GET /v1/routes and POST /v1/router-reports and "
            "/v1/router-signals",
        )
