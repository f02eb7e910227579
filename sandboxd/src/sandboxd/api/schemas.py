"""The API's response shapes, for the OpenAPI document and for validating what we send."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from sandboxd.core.records import ForkRecord


class Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ErrorOut(Out):
    error: str
    message: str
    problems: list[dict[str, str]] | None = None


class SandboxOut(Out):
    name: str
    uid: str
    routing_key: str
    baggage: str
    phase: str
    ready: bool
    reason: str | None
    message: str | None
    labels: dict[str, str]
    spec: dict[str, Any]
    created_at: str
    updated_at: str
    expires_at: str
    deleted_at: str | None
    ttl_seconds: int
    generation: int
    forks: list[ForkRecord]
    faults: list[dict[str, Any]]
    links: dict[str, str] = Field(
        description="`self`, `events`; `page`: the web page with a view capability; "
        "`preview:<service>`: the service's preview link on the router (a URL that sets the "
        "sandbox's preview cookie and redirects to `next`), for each service with a router URL"
    )


class SandboxList(Out):
    items: list[SandboxOut]


class EventOut(Out):
    time: str
    type: str
    reason: str
    message: str
    by: str | None = None
    """The name of the token whose call made the event; null for sandboxd's own."""


class EventList(Out):
    items: list[EventOut]


class BaselineOut(Out):
    url: str
    health: str | None


class ServiceOut(Out):
    name: str
    protocol: str
    router_port: int | None
    router_url: str | None
    baseline: BaselineOut


class ServiceList(Out):
    baggage_key: str
    items: list[ServiceOut]


class RouteOut(Out):
    sandbox: str
    forks: dict[str, str]
    faults: list[dict[str, Any]]


class RouteTableOut(Out):
    version: str
    baggage_key: str
    services: list[dict[str, Any]]
    routes: dict[str, RouteOut]
    base: str | None = None
    """Only in a delta (`delta=true`): the version these changes apply to."""
    removed: list[str] | None = None
    """Only in a delta: the routing keys no longer routed."""


# signals (issue 13) ---------------------------------------------------------------------
Verdict = Literal["regressed", "pass", "inconclusive"]
Attribute = bool | int | float | str


class SignalsAccepted(Out):
    accepted: int
    """Buckets and request records stored (or already stored, or older than the stored copy)."""
    ignored: int
    """Entries of no live sandbox of that name and routing key."""


class ToolOut(Out):
    tool: str
    calls: int
    jsonrpc_errors: int
    tool_errors: int
    injected: int
    """Calls a fault was applied to (counted in `calls` and the errors either way)."""


class SideOut(Out):
    """One side of a service over the window: the sandbox's traffic, or the baseline's."""

    requests: int
    errors: int
    error_rate: float | None
    errors_by_type: dict[str, int]
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    samples: int
    """Latency samples the percentiles are computed from."""
    sampled: bool
    """Fewer samples than requests: the routers kept a uniform sample (512 per bucket)."""
    faults_injected: int
    faults: dict[str, int]
    tools: list[ToolOut]


class FigureOut(Out):
    verdict: Verdict
    p_value: float | None
    threshold: float
    """The effect asked for (`effect`)."""
    reason: str | None = None
    """Why a figure is inconclusive."""
    floor: int | None = None
    """The fewest samples (requests, for errorRate) each side needs for a verdict."""


class ErrorRateOut(FigureOut):
    sandbox: float | None
    baseline: float | None


class LatencyOut(FigureOut):
    sandbox_median_ms: float | None
    baseline_median_ms: float | None
    ratio: float | None


class P99Out(FigureOut):
    sandbox_p99_ms: float | None
    baseline_p99_ms: float | None
    ratio: float | None
    exceeding: int | None = None
    """Sandbox samples above the baseline's p99."""
    expected: float | None = None
    """How many would if both sides were alike (1 %)."""


class ServiceCompareOut(Out):
    verdict: Verdict
    error_rate: ErrorRateOut
    latency: LatencyOut
    p99: P99Out


class ServiceMetricsOut(Out):
    service: str
    sandbox: SideOut
    baseline: SideOut
    compare: ServiceCompareOut


class RegressionOut(Out):
    service: str
    figure: str


class CompareOut(Out):
    overall: Verdict
    alpha: float
    effect: float
    min_samples: int
    regressed: list[RegressionOut]


class MetricsOut(Out):
    sandbox: str
    window: str
    from_: str = Field(alias="from")
    to: str
    exclude_injected: bool
    services: list[ServiceMetricsOut]
    compare: CompareOut


class FaultOut(Out):
    kind: str
    id: str


class SpanEventOut(Out):
    name: str
    time: float
    """Epoch seconds."""
    attributes: dict[str, Attribute]


class RequestOut(Out):
    """A request as its router recorded it."""

    sandbox: str
    service: str
    route: str
    start: float
    """Epoch seconds."""
    duration_ms: float
    method: str
    status: int
    bytes_in: int
    bytes_out: int
    error: str | None
    injected: bool
    faults: list[FaultOut]
    trace_id: str | None
    span_id: str | None
    parent_span_id: str | None
    rpc_method: str | None
    tool: str | None
    rpc_id: str | None
    name: str
    attributes: dict[str, Attribute]
    events: list[SpanEventOut]


class RequestList(Out):
    items: list[RequestOut]


class SpanOut(Out):
    span_id: str | None
    parent_span_id: str | None
    """Kept on a root too: its parent is a span the control plane does not hold."""
    name: str
    service: str
    route: str
    start: str
    duration_ms: float
    status: int
    error: str | None
    attributes: dict[str, Attribute]
    events: list[SpanEventOut]
    children: list[SpanOut]


class TraceOut(Out):
    trace_id: str
    start: str
    duration_ms: float
    spans: list[SpanOut]
    """The roots: spans whose parent is not among the trace's spans."""


class TraceList(Out):
    items: list[TraceOut]


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing or invalid token"},
    422: {"model": ErrorOut, "description": "Invalid input"},
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The body is not JSON"},
    413: {"model": ErrorOut, "description": "The body is over the size limit"},
}
