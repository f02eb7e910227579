"""What a harness reads about its sandbox's traffic (issue 13): `/v1/sandboxes/{name}/metrics`
(per service, the sandbox against the baseline, with verdicts), `/requests` (the newest request
records) and `/traces` (span trees). Built from what routers post to `/v1/router-signals`.

A sandbox that is deleted, or was never created, is a 404: its signals went with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from sandboxd.api.deps import AppState, CallerDep, StateDep, check_access, require_token
from sandboxd.api.schemas import (
    ERRORS,
    CompareOut,
    ErrorOut,
    ErrorRateOut,
    FigureOut,
    LatencyOut,
    MetricsOut,
    P99Out,
    RegressionOut,
    RequestList,
    RequestOut,
    ServiceCompareOut,
    ServiceMetricsOut,
    SideOut,
    SpanOut,
    ToolOut,
    TraceList,
    TraceOut,
)
from sandboxd.core import compare
from sandboxd.core.clock import rfc3339
from sandboxd.core.duration import PATTERN, format_duration, parse_duration
from sandboxd.core.phases import Phase
from sandboxd.core.signals import Side, Span, Trace, traces
from sandboxd.core.tokens import Caller
from sandboxd.errors import InvalidRequest, NotFound
from sandboxd.store.signals import RECORDS_KEPT, RecordFilter
from sandboxd.store.tables import SandboxRow

router = APIRouter(prefix="/v1/sandboxes", tags=["signals"], dependencies=[Depends(require_token)])
NameParam = Annotated[str, Path(max_length=63, description="The sandbox's name")]
NO_FILTER = RecordFilter()
MIN_WINDOW, MAX_WINDOW = 10, 3600
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No live sandbox of that name"}
}
_FIGURES: dict[str, type[FigureOut]] = {
    "errorRate": ErrorRateOut,
    "latency": LatencyOut,
    "p99": P99Out,
}


async def _live_row(state: AppState, name: str, caller: Caller) -> SandboxRow:
    row = await state.store.get(name)
    if row is None or row.phase == Phase.DELETED:
        raise _not_found(name)
    check_access(caller, row)
    return row


def _not_found(name: str) -> NotFound:
    return NotFound(f"sandbox {name!r} not found (or deleted, with its signals)", sandbox=name)


@router.get("/{name}/metrics", response_model=MetricsOut, responses={**ERRORS, **_NOT_FOUND})
async def sandbox_metrics(
    state: StateDep,
    caller: CallerDep,
    name: NameParam,
    window: Annotated[
        str, Query(max_length=32, pattern=PATTERN, description="10s to 1h, such as 5m")
    ] = "5m",
    exclude_injected: Annotated[
        bool,
        Query(alias="excludeInjected", description="Leave requests a fault was applied to out"),
    ] = True,
    effect: Annotated[
        float, Query(ge=0, le=100, allow_inf_nan=False, description="Smallest relative change")
    ] = 0.2,
    alpha: Annotated[float, Query(gt=0, lt=1, description="Significance level")] = 0.05,
    min_samples: Annotated[
        int, Query(alias="minSamples", ge=1, le=1_000_000, description="Floor per side")
    ] = 20,
) -> MetricsOut:
    """Per service the sandbox's figures and the baseline's over the same window, merged over
    every router, and a verdict per figure (`sandboxd.core.compare` states the rules)."""
    criteria = compare.Criteria(alpha=alpha, effect=effect, min_samples=min_samples)
    return await metrics_of(
        state, name, allow=lambda row: check_access(caller, row), seconds=_window(window),
        exclude_injected=exclude_injected, criteria=criteria,
    )  # fmt: skip


DEFAULT_CRITERIA = compare.Criteria(alpha=0.05, effect=0.2, min_samples=20)


async def metrics_of(
    state: AppState,
    name: str,
    *,
    allow: Callable[[SandboxRow], None],
    seconds: int = 300,
    exclude_injected: bool = True,
    criteria: compare.Criteria = DEFAULT_CRITERIA,
) -> MetricsOut:
    """`GET /v1/sandboxes/{name}/metrics`'s answer (also the web page's): `allow` raises when
    the sandbox found is not the caller's to see; NotFound when none is live."""
    now = time.time()
    since = now - seconds
    found = await state.store.live_signal_sides(
        name, now=now, window=seconds, exclude_injected=exclude_injected
    )
    if found is None:
        raise _not_found(name)
    row, mine, theirs = found
    allow(row)
    services = sorted(set(mine) | {fork.service for fork in row.spec.forks})
    figures = [_service(s, mine.get(s, Side()), theirs.get(s, Side()), criteria) for s in services]
    return MetricsOut(
        sandbox=name, window=format_duration(seconds), from_=rfc3339(_utc(since)),
        to=rfc3339(_utc(now)), exclude_injected=exclude_injected, services=figures,
        compare=_overall(figures, criteria),
    )  # fmt: skip


def _window(window: str) -> int:
    try:
        seconds = parse_duration(window)
    except ValueError as e:
        raise InvalidRequest(f"window: {e}", error="invalid_window") from e
    if not MIN_WINDOW <= seconds <= MAX_WINDOW:
        raise InvalidRequest("window: from 10s to 1h", error="invalid_window")
    return seconds


def _service(
    service: str, sandbox: Side, baseline: Side, criteria: compare.Criteria
) -> ServiceMetricsOut:
    figures = {
        "errorRate": compare.error_rate(
            sandbox.errors, sandbox.requests, baseline.errors, baseline.requests, criteria
        ),
        "latency": compare.latency(sandbox.sample(), baseline.sample(), criteria),
        "p99": compare.p99(sandbox.sample(), baseline.sample(), criteria),
    }
    shown = {k: _figure(k, f) for k, f in figures.items()}
    verdict = compare.worst([f.verdict for f in figures.values()])
    return ServiceMetricsOut(
        service=service, sandbox=_side(sandbox), baseline=_side(baseline),
        compare=ServiceCompareOut(verdict=verdict, **shown),
    )  # fmt: skip


def _figure(kind: str, figure: compare.Figure) -> FigureOut:
    body = {**figure.details, "verdict": figure.verdict, "pValue": figure.p_value}
    return _FIGURES[kind].model_validate(body)


def _side(side: Side) -> SideOut:
    ordered = side.latencies
    return SideOut(
        requests=side.requests, errors=side.errors,
        error_rate=side.errors / side.requests if side.requests else None,
        errors_by_type=side.errors_by_type, p50_ms=compare.percentile(ordered, 50),
        p95_ms=compare.percentile(ordered, 95), p99_ms=compare.percentile(ordered, 99),
        samples=len(ordered), sampled=side.sampled, faults_injected=side.faults_injected,
        faults=side.faults,
        tools=[ToolOut(tool=t, calls=f.calls, jsonrpc_errors=f.jsonrpc_errors,
                       tool_errors=f.tool_errors, injected=f.injected)
               for t, f in sorted(side.tools.items())],
    )  # fmt: skip


def _overall(services: Sequence[ServiceMetricsOut], criteria: compare.Criteria) -> CompareOut:
    regressed = [
        RegressionOut(service=s.service, figure=figure)
        for s in services
        for figure, shown in (
            ("errorRate", s.compare.error_rate),
            ("latency", s.compare.latency),
            ("p99", s.compare.p99),
        )
        if shown.verdict == "regressed"
    ]
    return CompareOut(
        overall=compare.worst([s.compare.verdict for s in services]), alpha=criteria.alpha,
        effect=criteria.effect, min_samples=criteria.min_samples, regressed=regressed,
    )  # fmt: skip


StatusFilter = Annotated[
    str | None,
    Query(pattern=r"^([1-5]xx|[1-5][0-9][0-9])$", description="A class (5xx) or a status (503)"),
]


@router.get("/{name}/requests", response_model=RequestList, responses={**ERRORS, **_NOT_FOUND})
async def sandbox_requests(
    state: StateDep,
    caller: CallerDep,
    name: NameParam,
    service: Annotated[str | None, Query(max_length=63)] = None,
    status: StatusFilter = None,
    fault: Annotated[str | None, Query(max_length=63, description="A fault's id or kind")] = None,
    trace_id: Annotated[str | None, Query(alias="traceId", pattern=r"^[0-9a-f]{32}$")] = None,
    error: Literal["http_5xx", "jsonrpc", "tool_error", "transport"] | None = None,
    limit: Annotated[int, Query(ge=1, le=RECORDS_KEPT)] = 100,
) -> RequestList:
    """The sandbox's newest request records (the newest 1,000 are kept), newest first."""
    row = await _live_row(state, name, caller)
    where = RecordFilter(service=service, status=_statuses(status), error=error, trace_id=trace_id)
    found = await recent_requests(state, row, where=where, limit=limit, fault=fault)
    return RequestList(items=[RequestOut.model_validate(r) for r in found])


async def recent_requests(
    state: AppState,
    row: SandboxRow,
    *,
    where: RecordFilter = NO_FILTER,
    limit: int = 100,
    fault: str | None = None,
) -> list[Mapping[str, Any]]:
    """The sandbox's newest request records, newest first (`/requests`, and the web page)."""
    # a fault is matched here, in the records (the ring is bounded): read the whole ring
    wanted = limit if fault is None else 2 * RECORDS_KEPT
    found = await state.store.request_records(
        routing_key=row.routing_key, where=where, limit=wanted
    )
    if fault is not None:
        found = [r for r in found if any(fault in (f["id"], f["kind"]) for f in r["faults"])]
    return found[:limit]


def _statuses(status: str | None) -> tuple[int, int] | None:
    if status is None:
        return None
    if status.endswith("xx"):
        return int(status[0]) * 100, int(status[0]) * 100 + 99
    return int(status), int(status)


@router.get("/{name}/traces", response_model=TraceList, responses={**ERRORS, **_NOT_FOUND})
async def sandbox_traces(
    state: StateDep,
    caller: CallerDep,
    name: NameParam,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    trace_id: Annotated[str | None, Query(alias="traceId", pattern=r"^[0-9a-f]{32}$")] = None,
) -> TraceList:
    """The sandbox's newest traces as span trees (one span per request its routers recorded;
    a span whose parent is not known is a root), newest first."""
    row = await _live_row(state, name, caller)
    found = await recent_traces(state, row, limit=limit, trace_id=trace_id)
    return TraceList(
        items=[
            TraceOut(
                trace_id=t.trace_id,
                start=_iso(t.start),
                duration_ms=t.duration_ms,
                spans=[_span(s) for s in t.roots],
            )
            for t in found
        ]
    )


async def recent_traces(
    state: AppState, row: SandboxRow, *, limit: int = 20, trace_id: str | None = None
) -> list[Trace]:
    """The sandbox's newest traces as span trees, newest first (`/traces`, and the web page)."""
    found = await state.store.traced_records(
        routing_key=row.routing_key, limit=limit, trace_id=trace_id
    )
    return traces(found)[:limit]


def _span(span: Span) -> SpanOut:
    r = span.record
    return SpanOut(
        span_id=r["spanId"], parent_span_id=r["parentSpanId"], name=r["name"],
        service=r["service"], route=r["route"], start=_iso(r["start"]),
        duration_ms=r["durationMs"], status=r["status"], error=r["error"],
        attributes=r["attributes"], events=r["events"],
        children=[_span(c) for c in span.children],
    )  # fmt: skip


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _iso(epoch: float) -> str:
    """Microseconds: the spans of one request are often less than a millisecond apart."""
    return _utc(epoch).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
