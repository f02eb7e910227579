"""The route table for routers, the catalog, and the health and metrics endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sandboxd.api.deps import AppState, StateDep, require_token
from sandboxd.api.errors import error_response
from sandboxd.api.schemas import (
    ERRORS,
    BaselineOut,
    ErrorOut,
    RouteTableOut,
    ServiceList,
    ServiceOut,
)
from sandboxd.core.catalog import Service
from sandboxd.core.plan import reachable_host
from sandboxd.errors import Unavailable
from sandboxd.settings import Settings

v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])
ops = APIRouter(tags=["operations"])


@v1.get(
    "/routes",
    tags=["routing"],
    response_model=RouteTableOut,
    responses={
        **ERRORS,
        304: {"description": "Unchanged (If-None-Match matched)"},
        429: {"model": ErrorOut, "description": "Too many long polls held; retry later"},
    },
)
async def route_table(
    state: StateDep,
    if_none_match: Annotated[str | None, Header(max_length=256)] = None,
    wait: Annotated[
        float, Query(ge=0, le=300, description="Seconds to hold the request for a change")
    ] = 0,
    delta: Annotated[
        bool, Query(description="Answer as changes to the If-None-Match table when known")
    ] = False,
) -> Response:
    """The route table. With `If-None-Match` set to the current ETag and `wait` > 0 this is a
    long poll: it answers as soon as the table changes, or 304 after `wait` seconds. With
    `delta=true` and an `If-None-Match` of a recent table, the answer holds only what changed
    since: `base` (that table's version), `removed` (routing keys) and the changed `routes`."""
    table = state.routes.table
    if if_none_match == table.etag and wait > 0:
        if not state.long_polls.try_enter():
            return _too_many_polls(state)
        try:
            table = await state.routes.wait_for_change(if_none_match, timeout=wait)
        finally:
            state.long_polls.leave()
    headers = {"ETag": table.etag, "Cache-Control": "no-cache"}
    if if_none_match == table.etag:
        return Response(status_code=304, headers=headers)
    changes = state.routes.delta(table, if_none_match) if delta and if_none_match else None
    body = table.body if changes is None else changes
    return Response(body, media_type="application/json", headers=headers)


def _too_many_polls(state: AppState) -> Response:
    limit = state.long_polls.limit
    return error_response(
        429,
        "too_many_long_polls",
        f"{limit} long polls are held already; retry, or poll without wait",
        headers={"Retry-After": "1"},
    )


@v1.get("/services", tags=["routing"], response_model=ServiceList, responses=ERRORS)
async def services(state: StateDep) -> ServiceList:
    return ServiceList(
        baggage_key=state.catalog.baggage_key,
        items=[
            ServiceOut(
                name=s.name,
                protocol=s.protocol,
                router_port=s.router_port,
                router_url=router_url(state.settings, s),
                baseline=BaselineOut(url=s.baseline.url, health=s.baseline.health),
            )
            for s in state.catalog.services
        ],
    )


def router_url(settings: Settings, service: Service) -> str | None:
    """Where clients reach `service` through the router (None: it has no router port)."""
    if not service.router_port:
        return None
    return f"http://{reachable_host(settings.router_host)}:{service.router_port}"


@ops.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@ops.get("/readyz", responses={503: {"description": "Not ready"}})
async def readyz(state: StateDep) -> JSONResponse:
    """Readiness: the database answers and the reconciler is alive."""
    problems = []
    try:
        await state.store.ping()
    except Unavailable as e:
        problems.append(e.message)
    if not state.reconciler_alive():
        problems.append("the reconciler is not running")
    if problems:
        return JSONResponse({"status": "unready", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ready"})


@ops.get("/metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Prometheus text exposition."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
