"""The troubleshooter agent: an HTTP service that diagnoses a namespace's failing pod.

    PORT=7411 python3 agent.py

`POST /diagnose {"namespace": "demo"}` answers

    {"ok": true, "pod": "...", "diagnosis": "...", "error": null,
     "evidence": [{"service": "cluster-mcp", "tool": "list_pods", "facts": {...}}, ...],
     "promptVersion": "v1", "modelVersion": "rules-1", "sandbox": "baseline", "traceId": "..."}

- 200 with `ok: true` when it reached a diagnosis (or found no failing pod: `pod` is null);
- 502 with `ok: false`, `diagnosis: null` and `error` when a tool failed (an HTTP error, a
  time-out, a rate limit beyond the retry budget, a JSON-RPC or tool error, a reset connection,
  invalid JSON, a tool the server does not list) or answered with a result this prompt version
  cannot read (empty, a field missing) — the error names the service, the tool and the
  problem or the field, and the evidence gathered so far is kept, the failed step last. The
  agent never invents a diagnosis past a failed step;
- 400 with `ok: false` for a body that is not `{"namespace": "<name>"}`.

`GET /` is a small web page (`web_page.py`): which build of the agent served it, and a
"Diagnose" button whose `fetch()` calls `POST /diagnose` — what a sandbox's preview link shows
in a browser. `GET /healthz` answers 200. The tool servers are reached through the router, at
`$SANDBOXD_SERVICE_CLUSTER_MCP_URL/mcp` and `$SANDBOXD_SERVICE_LOGS_MCP_URL/mcp`, with the
request's `baggage` and trace context on every call, so a request tagged for a sandbox reaches
that sandbox's forks and the baseline for everything else. That is OpenTelemetry's job here:
the caller's `traceparent` and `baggage` are extracted into the context, which stays attached
while the request is served; `POST /diagnose` is a SERVER span and each MCP request a CLIENT
span under it, and the httpx instrumentation and `params._meta` carry the context on (see
`telemetry.py`, `tools.py`). Spans are exported by OTLP when the standard `OTEL_*` variables
say so. Each diagnosis is logged as one JSON line on stdout, with its trace id.

A 429 is retried after its `Retry-After`, at most 3 attempts and 5 s of waiting per step; the
evidence item of that step lists the retries. Content a tool returns beside its structured
result is ignored (an evidence `warnings` entry says so), so instructions planted in tool output
never reach the diagnosis. See `tools.py` and `failures.py`.

Settings come from the environment once, at start: `AGENT_PROMPT_VERSION` (v1 | v2, default
v1), `AGENT_TOOL_TIMEOUT_S` (the limit per tool call, default 10), `AGENT_MODEL_URL`/
`AGENT_MODEL` (see `diagnoser.py`), `AGENT_DEBUG_REQUESTS=1` (serve the headers of the newest
requests at `GET /debug/requests`, for tests: see `received.py`; off by default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import telemetry
import uvicorn
from diagnoser import Diagnoser, diagnoser_from_env
from failures import ToolCallError
from opentelemetry import context, propagate, trace
from received import VIEW, Received, Recording
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from tools import connect
from web_page import page_routes
from workflow import LAST_RUN_FIELDS, Evidence, MissingField, diagnose


@dataclass(frozen=True)
class Settings:
    prompt_version: str
    """Which schema of the tools' results this agent knows how to read (v1 | v2)."""
    cluster_url: str
    """cluster-mcp's MCP endpoint, normally through the router."""
    logs_url: str
    """logs-mcp's MCP endpoint, normally through the router."""
    sandbox: str
    """The sandbox this process runs in ("baseline" when none); reported, never acted on."""
    tool_timeout: float
    """Seconds one tool call may take before the agent gives up on it."""
    debug_requests: bool = False
    """Serve the newest requests' headers at `GET /debug/requests` (they hold users' cookies)."""

    @classmethod
    def from_env(cls) -> Settings:
        version = os.environ.get("AGENT_PROMPT_VERSION", "v1")
        if version not in LAST_RUN_FIELDS:
            raise SystemExit(f"agent: AGENT_PROMPT_VERSION: {version!r} is not one of v1, v2")
        return cls(
            prompt_version=version,
            cluster_url=_mcp_url("SANDBOXD_SERVICE_CLUSTER_MCP_URL", "http://127.0.0.1:7312"),
            logs_url=_mcp_url("SANDBOXD_SERVICE_LOGS_MCP_URL", "http://127.0.0.1:7313"),
            sandbox=os.environ.get("SANDBOXD_SANDBOX") or "baseline",
            tool_timeout=_seconds("AGENT_TOOL_TIMEOUT_S", default=10.0),
            debug_requests=_switch("AGENT_DEBUG_REQUESTS"),
        )


def _seconds(variable: str, *, default: float) -> float:
    value = os.environ.get(variable)
    try:
        seconds = default if value is None else float(value)
    except ValueError:
        seconds = -1
    if not 0 < seconds <= 600:
        raise SystemExit(f"agent: {variable}: {value!r} is not a number of seconds in (0, 600]")
    return seconds


def _switch(variable: str) -> bool:
    value = os.environ.get(variable, "")
    if value not in ("", "0", "1"):
        raise SystemExit(f"agent: {variable}: {value!r} is not 1 (on) or 0 (off)")
    return value == "1"


def _mcp_url(variable: str, default: str) -> str:
    return os.environ.get(variable, default).rstrip("/") + "/mcp"


def build_app(*, settings: Settings, diagnoser: Diagnoser) -> Starlette:
    tracer = trace.get_tracer("troubleshooter")

    async def run(request: Request) -> Response:
        # The caller's trace and baggage (with the sandbox's routing key) become the current
        # context: every span, header and `_meta` of this diagnosis is derived from it.
        token = context.attach(propagate.extract(request.headers))
        try:
            with tracer.start_as_current_span(
                "POST /diagnose",
                kind=trace.SpanKind.SERVER,
                attributes={"http.request.method": "POST", "http.route": "/diagnose"},
            ) as span:
                response = await serve(request)
                span.set_attribute("http.response.status_code", response.status_code)
                if response.status_code >= 500:
                    span.set_attribute("error.type", str(response.status_code))
                    span.set_status(trace.StatusCode.ERROR)
                return response
        finally:
            context.detach(token)

    async def serve(request: Request) -> Response:
        answer: dict[str, Any] = {
            "ok": False,
            "pod": None,
            "diagnosis": None,
            "error": None,
            "evidence": [],
            "promptVersion": settings.prompt_version,
            "modelVersion": diagnoser.version,
            "sandbox": settings.sandbox,
        }
        try:
            body = await request.json()
        except ValueError:
            body = None
        namespace = body.get("namespace") if isinstance(body, dict) else None
        answer["traceId"] = telemetry.trace_id()
        if not isinstance(namespace, str) or not namespace:
            answer["error"] = 'the body must be JSON {"namespace": "<name>"}'
            return _answered(answer, 400)
        evidence = Evidence(items=answer["evidence"])
        timeout = settings.tool_timeout
        try:
            async with (
                connect("cluster-mcp", settings.cluster_url, timeout=timeout) as cluster,
                connect("logs-mcp", settings.logs_url, timeout=timeout) as logs,
            ):
                # Expected failures are caught here, inside the sessions: raised through them
                # they would arrive wrapped in the SDK's task-group exception groups.
                try:
                    outcome = await diagnose(
                        namespace,
                        cluster=cluster,
                        logs=logs,
                        diagnoser=diagnoser,
                        prompt_version=settings.prompt_version,
                        evidence=evidence,
                    )
                except (ToolCallError, MissingField) as e:
                    evidence.failed(e)
                    answer["error"] = str(e)
        except ToolCallError as e:
            # A connection that failed, or broke during a call (the session is gone).
            evidence.failed(e)
            answer["error"] = str(e)
        if answer["error"] is not None:
            return _answered(answer, 502)
        answer |= {"ok": True, "pod": outcome.pod, "diagnosis": outcome.diagnosis}
        return _answered(answer, 200)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse(f"agent {settings.prompt_version}")

    routes = [
        Route("/diagnose", run, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        *page_routes(
            prompt_version=settings.prompt_version,
            model_version=diagnoser.version,
            sandbox=settings.sandbox,
        ),
    ]
    middleware = []
    if settings.debug_requests:
        received = Received()
        routes.append(Route(VIEW, received.view, methods=["GET"]))
        middleware.append(Middleware(Recording, received=received))
    return Starlette(routes=routes, middleware=middleware)


def _answered(answer: dict[str, Any], status: int) -> Response:
    """The answer, logged as one JSON line (inside the request's span: with its trace id)."""
    fields = {k: answer[k] for k in ("ok", "pod", "error", "sandbox", "promptVersion")}
    telemetry.log.info("diagnose", extra={"fields": {"status": status} | fields})
    return JSONResponse(answer, status_code=status)


def main() -> None:
    settings = Settings.from_env()
    telemetry.setup()
    app = build_app(settings=settings, diagnoser=diagnoser_from_env())
    port = int(os.environ["PORT"])
    print(f"agent {settings.prompt_version} listening on http://127.0.0.1:{port}", flush=True)
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
