"""The audit log: every `/v1` call but those made with the router token (routers poll the
route table and report every few seconds), with the token that made it (`-`: none valid), and
`GET /v1/audit` (admin only).

A call is recorded after its answer is sent, into a list that a task writes to the store in
one transaction every `FLUSH_EVERY` seconds and at shutdown: a call costs a list append, not a
database write (the calls of the last fraction of a second are lost if the process dies).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.types import ASGIApp, Receive, Scope, Send

from sandboxd.api.deps import CallerDep, StateDep, require_token
from sandboxd.api.middleware import Answered
from sandboxd.api.schemas import ERRORS, Out
from sandboxd.core.clock import rfc3339, utcnow
from sandboxd.core.tokens import Caller
from sandboxd.errors import Forbidden
from sandboxd.store.repository import Store
from sandboxd.store.tables import AuditRow

log = logging.getLogger(__name__)
FLUSH_EVERY = 0.25
MAX_PENDING = 10_000
"""Calls held while the store cannot take them; beyond, the oldest are dropped (and said)."""
UNKNOWN = "-"
"""The token of a call that presented none that is valid."""


class AuditTrail:
    """Calls waiting to be written."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: list[AuditRow] = []
        self.dropped = 0

    def add(self, call: AuditRow) -> None:
        if len(self._pending) >= MAX_PENDING:
            del self._pending[0]
            self.dropped += 1
        self._pending.append(call)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        calls, self._pending = self._pending, []
        try:
            await self._store.audit(calls)
        except Exception:  # the database is down: keep them for the next try
            log.warning("audit log: %d calls not written yet; retrying", len(calls))
            self._pending[:0] = calls[-MAX_PENDING:]


class AuditCalls:
    """Records each `/v1` call (but the routers' own) into the app's `AuditTrail`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        answer = Answered(send)
        try:
            await self.app(scope, receive, answer.send)
        finally:
            caller = scope.get("state", {}).get("caller")
            state = getattr(scope["app"].state, "sandboxd", None)
            if state is not None and state.audit is not None and not _router(caller):
                name = caller.name if isinstance(caller, Caller) else UNKNOWN
                method = str(scope["method"])[:8]
                state.audit.add(AuditRow(time=utcnow(), token=name, method=method,
                                         path=path[:512], status=answer.status))  # fmt: skip


def _router(caller: object) -> bool:
    return isinstance(caller, Caller) and caller.router


class AuditOut(Out):
    id: int
    time: str
    token: str
    method: str
    path: str
    status: int


class AuditList(Out):
    items: list[AuditOut]
    next: int | None
    """`before` for the next (older) page; null on the last."""


router = APIRouter(prefix="/v1", tags=["audit"], dependencies=[Depends(require_token)])


@router.get("/audit", response_model=AuditList, responses=ERRORS)
async def audit_log(
    state: StateDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**53)] = None,
) -> AuditList:
    """The newest API calls first: time, token name, method, path, status (admin only)."""
    if not caller.admin:
        raise Forbidden(f"token {caller.name!r} may not read the audit log (the admin may)")
    if state.audit is not None:
        await state.audit.flush()  # (what was just called is shown)
    rows = await state.store.audit_log(limit=limit, before=before)
    items = [
        AuditOut(
            id=r.id or 0,
            time=rfc3339(r.time),
            token=r.token,
            method=r.method,
            path=r.path,
            status=r.status,
        )
        for r in rows
    ]
    return AuditList(items=items, next=items[-1].id if len(items) == limit else None)
