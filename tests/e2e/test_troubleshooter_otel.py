"""The troubleshooter's agent traced the OpenTelemetry way, seen by a real OpenTelemetry
Collector: sandboxd, its router and the example's baselines run with
OTEL_EXPORTER_OTLP_ENDPOINT pointing at the collector (the baselines inherit it).

- one `POST /diagnose` is one trace: the agent's SERVER span (a child of the caller's span),
  a CLIENT span per MCP request under it, and the instrumented HTTP requests under those;
- a sandbox's key rides in the OpenTelemetry context: the header the instrumentation writes and
  the `params._meta` the MCP SDK sends come from it, and the fork answers; the router's spans
  (it exports by the same variables) continue the trace under the agent's HTTP spans, with the
  route decision the key made;
- the agent logs a JSON line per diagnosis with the trace id;
- the trap the agent's README warns about, against a real MCP server that records what it
  received: with any baggage in the context, the httpx instrumentation replaces a `baggage`
  header set by hand (and the MCP SDK a `_meta.baggage`), so a `sandbox` member set only there
  is lost; set in the context, it arrives in both, and they agree.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from opentelemetry import baggage, context
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from starlette.types import Message, Receive, Scope, Send

from tests.e2e.troubleshooter import (
    EXAMPLE,
    SANDBOXES,
    Troubleshooter,
    agent_process,
    running_troubleshooter,
)
from tests.support import poll
from tests.support.otel import Collector, Span, running_collector, serving
from tests.support.server import free_port

AGENT = "troubleshooter-agent"


def example_module(name: str) -> ModuleType:
    """One of the example's modules, loaded under a name of its own (`telemetry` is generic)."""
    spec = importlib.util.spec_from_file_location(f"troubleshooter_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


telemetry = example_module("telemetry")


@dataclass(frozen=True)
class World:
    app: Troubleshooter
    collector: Collector
    schema_change: str
    """The baggage header value that selects the schema-change sandbox (cluster-mcp v2)."""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with (
        running_collector(tmp_path_factory.mktemp("otelcol")) as collector,
        pytest.MonkeyPatch.context() as env,
    ):
        for name in [n for n in os.environ if n.startswith("OTEL_")]:
            env.delenv(name)
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.otlp_http_url)
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        with running_troubleshooter(tmp_path_factory.mktemp("troubleshooter")) as app:
            key = app.up(SANDBOXES / "schema-change.yaml")["baggage"]
            yield World(app=app, collector=collector, schema_change=key)


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def agent_trace(world: World, trace_id: str) -> list[Span]:
    """The agent's spans of `trace_id`, once its server span is in: it ends after all the
    others, so they were exported before it."""

    def complete(spans: list[Span]) -> bool:
        return any(s.trace_id == trace_id and s.name == "POST /diagnose" for s in spans)

    spans = world.collector.wait_for(complete, what=f"the agent's spans of trace {trace_id}")
    return [s for s in spans if s.trace_id == trace_id and s.service == AGENT]


def children(spans: list[Span], parent: Span) -> list[Span]:
    return [s for s in spans if s.parent == parent.span_id]


def test_one_diagnosis_is_one_trace_of_the_agent_its_mcp_calls_and_their_http(
    world: World,
) -> None:
    trace_id, caller, header = traceparent()
    response = world.app.http_post_diagnose({"traceparent": header})
    assert response.status_code == 200 and response.json()["traceId"] == trace_id
    spans = agent_trace(world, trace_id)

    (server,) = [s for s in spans if s.kind == "server"]
    assert server.name == "POST /diagnose" and server.parent == caller
    assert server.attributes["http.response.status_code"] == 200
    steps = [s for s in children(spans, server) if "gen_ai.tool.name" in s.attributes]
    assert sorted(s.name for s in steps) == [
        "cluster-mcp describe_pod",
        "cluster-mcp list_pods",
        "logs-mcp get_logs",
    ]
    routers = {world.app.url(s) + "/mcp" for s in ("cluster-mcp", "logs-mcp")}
    for step in steps:
        # the MCP SDK's CLIENT span for the request, and the instrumented HTTP exchange under it
        tool = step.attributes["gen_ai.tool.name"]
        (sent,) = [s for s in children(spans, step) if s.name == f"MCP send tools/call {tool}"]
        assert sent.kind == "client" and sent.attributes["mcp.method.name"] == "tools/call"
        (http,) = children(spans, sent)
        assert http.kind == "client" and http.attributes["http.request.method"] == "POST"
        service = step.attributes["peer.service"]
        assert http.attributes["url.full"] == f"{world.app.url(service)}/mcp"
        assert http.attributes["http.response.status_code"] == 200
    # Every HTTP request of the diagnosis (the sessions' set-up and listings too) is traced, to
    # a router port, in this one trace.
    exchanges = [s for s in spans if "url.full" in s.attributes]
    assert {s.attributes["url.full"] for s in exchanges} == routers
    assert len(exchanges) > len(steps)


def test_the_sandbox_key_in_the_context_reaches_the_fork_and_the_log_has_the_trace(
    world: World,
) -> None:
    trace_id, caller, header = traceparent()
    response = world.app.http_post_diagnose(
        {"traceparent": header, "baggage": f"user.id=alice,{world.schema_change}"}
    )
    answer = response.json()
    # Only the fork's v2 schema has `lastTermination`: header and _meta carried the key there.
    assert response.status_code == 502 and "lastTermination" in answer["error"], answer
    assert answer["traceId"] == trace_id
    spans = agent_trace(world, trace_id)
    (server,) = [s for s in spans if s.kind == "server"]
    assert server.status == "error" and server.attributes["error.type"] == "502"
    assert_router_spans_continue_the_trace(world, trace_id, spans, caller)

    log = world.app.server.data_dir / "baseline" / "agent.log"
    lines = poll.until(
        lambda: [
            json.loads(line)
            for line in log.read_text().splitlines()
            if line.startswith("{") and trace_id in line
        ],
        timeout=10,
        what=f"the agent's JSON log line of trace {trace_id}",
    )
    (line,) = lines
    assert line["traceId"] == trace_id and line["spanId"] == server.span_id
    assert line["message"] == "diagnose" and line["status"] == 502 and line["ok"] is False


def assert_router_spans_continue_the_trace(
    world: World, trace_id: str, agent: list[Span], caller: str
) -> None:
    """The router's spans of the trace (it exports them too, by the same variables): the
    agent's request under the caller's span, and each MCP request under the agent's HTTP span
    that sent it, with the route decision the sandbox's key made."""

    def router(spans: list[Span]) -> list[Span]:
        return [s for s in spans if s.trace_id == trace_id and s.service == "sandboxd-router"]

    spans = router(
        world.collector.wait_for(
            lambda spans: {"POST", "tools/call describe_pod"} <= {s.name for s in router(spans)},
            what=f"the router's spans of trace {trace_id}",
        )
    )
    assert {s.attributes["sandboxd.sandbox"] for s in spans} == {"schema-change"}
    (entry,) = [s for s in spans if s.attributes["sandboxd.service"] == "agent"]
    assert entry.parent == caller and entry.attributes["sandboxd.route"] == "baseline"
    assert entry.attributes["http.response.status_code"] == 502
    sent = {s.span_id: s for s in agent if "url.full" in s.attributes}
    calls = [s for s in spans if s.attributes["sandboxd.service"] != "agent"]
    assert calls and all(s.parent in sent for s in calls), "each under the agent's HTTP span"
    routes = {(s.attributes["sandboxd.service"], s.attributes["sandboxd.route"]) for s in calls}
    assert routes == {("cluster-mcp", "sandbox"), ("logs-mcp", "baseline")}
    described = next(s for s in calls if s.name == "tools/call describe_pod")
    assert described.attributes["gen_ai.tool.name"] == "describe_pod"
    assert described.attributes["url.path"] == "/mcp"
    # the MCP revision the agent's client spoke; a session id only in the sessionful ones
    version = described.attributes["mcp.protocol.version"]
    sessionful = version in {"2025-03-26", "2025-06-18", "2025-11-25"}
    assert ("mcp.session.id" in described.attributes) is sessionful, version
    assert sent[described.parent].attributes["url.full"] == f"{world.app.url('cluster-mcp')}/mcp"


def test_a_fault_shows_on_the_router_span_of_the_call_it_hit(world: World) -> None:
    """One diagnosis in a sandbox whose fault limits get_logs twice: the router's spans of
    the two limited calls carry the fault and the moment it was injected, the retry's does
    not, and the control plane keeps the same spans (same ids) as its trace."""
    key = world.app.up(EXAMPLE / "faults" / "rate_limit.yaml")["baggage"]
    trace_id, _caller, header = traceparent()
    response = world.app.http_post_diagnose({"traceparent": header, "baggage": key})
    assert response.status_code == 200, response.text

    def logs_calls(spans: list[Span]) -> list[Span]:
        return [s for s in spans if s.trace_id == trace_id and s.name == "tools/call get_logs"
                and s.service == "sandboxd-router"]  # fmt: skip

    spans = logs_calls(world.collector.wait_for(
        lambda spans: len(logs_calls(spans)) == 3, what="the router's 3 get_logs spans"
    ))  # fmt: skip
    limited = [s for s in spans if "sandboxd.fault.id" in s.attributes]
    assert len(limited) == 2
    for span in limited:
        assert span.attributes["sandboxd.fault.kind"] == "rate_limit"
        assert span.attributes["sandboxd.fault.id"] == "logs-429"
        assert span.attributes["sandboxd.sandbox"] == "fault-rate-limit"
        assert span.attributes["sandboxd.route"] == "baseline"  # no fork: the key's faults
        assert span.attributes["http.response.status_code"] == 429
        assert [e.name for e in span.events] == ["sandboxd.fault.injected"]
    (through,) = [s for s in spans if s not in limited]
    assert through.attributes["http.response.status_code"] == 200
    # the control plane's trace of the sandbox: the same spans, the same ids
    with world.app.server.client() as api:
        kept = poll.until(
            lambda: api.get(
                "/v1/sandboxes/fault-rate-limit/traces", params={"traceId": trace_id}
            ).json()["items"],
            lambda items: items and _span_ids(items[0]["spans"]) >= {s.span_id for s in spans},
            timeout=10,
            what="the control plane's copy of the trace",
        )
    assert {s.span_id for s in spans} <= _span_ids(kept[0]["spans"])


def _span_ids(tree: list[dict[str, Any]]) -> set[str]:
    ids: set[str] = set()
    for span in tree:
        ids.add(span["spanId"])
        ids |= _span_ids(span.get("children") or [])
    return ids


@contextmanager
def lone_agent(world: World, env: dict[str, str]) -> Iterator[str]:
    """Another agent process, calling the tools through the world's router, with `env` as its
    only OTEL_* variables; its URL. Stopped (and so flushed) on exit."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SANDBOXD_"))}
    full |= env | {
        "SANDBOXD_SERVICE_CLUSTER_MCP_URL": world.app.url("cluster-mcp"),
        "SANDBOXD_SERVICE_LOGS_MCP_URL": world.app.url("logs-mcp"),
    }
    with agent_process(port, full) as url:
        yield url


def test_with_the_sdk_disabled_the_key_and_trace_still_flow_and_nothing_is_exported(
    world: World,
) -> None:
    disabled = {
        "OTEL_SDK_DISABLED": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": world.collector.otlp_http_url,
        "OTEL_SERVICE_NAME": "agent-disabled",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    trace_id, _, header = traceparent()
    with lone_agent(world, disabled) as agent:
        response = httpx.post(
            f"{agent}/diagnose",
            json={"namespace": "demo"},
            headers={"traceparent": header, "baggage": world.schema_change},
            timeout=60,
        )
    answer = response.json()
    assert response.status_code == 502 and "lastTermination" in answer["error"], answer
    assert answer["traceId"] == trace_id, "the caller's trace goes on without the SDK"
    # Stopping flushes whatever an exporting agent holds: once a later span is in, any span of
    # the stopped agent would be too.
    marker, _, marked = traceparent()
    assert world.app.http_post_diagnose({"traceparent": marked}).status_code == 200
    agent_trace(world, marker)
    assert [s for s in world.collector.spans() if s.service == "agent-disabled"] == []


@pytest.mark.parametrize(
    ("env", "exporter"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, OTLPSpanExporter),
        ({"OTEL_TRACES_EXPORTER": "console"}, ConsoleSpanExporter),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, None),
    ],
)
def test_the_agent_exports_only_when_an_otel_variable_asks(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], exporter: type | None
) -> None:
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    chosen = telemetry.exporter_from_env()
    assert (None if chosen is None else type(chosen)) is exporter


KEY = "sandbox=k3y-of-pr-7"
ALICE = "user.id=alice"


@dataclass(frozen=True)
class Received:
    """What the recording MCP server got with the `tools/call` request."""

    header: str | None
    """The `baggage` header."""
    meta: str | None
    """`params._meta.baggage`."""


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[str, list[tuple[dict[str, str], dict[str, Any]]]]]:
    """A real MCP server (the SDK's, one tool `ping`) recording the headers and JSON body of
    every POST it gets."""
    server = MCPServer(name="recorder", version="1.0.0")

    @server.tool()
    def ping() -> dict[str, bool]:
        return {"pong": True}

    insecure = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app = server.streamable_http_app(transport_security=insecure, host="127.0.0.1")
    seen: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        messages = [await receive()]
        while messages[-1].get("more_body"):
            messages.append(await receive())
        body = b"".join(m.get("body", b"") for m in messages)
        seen.append(({k.decode(): v.decode() for k, v in scope["headers"]}, json.loads(body)))
        replay = iter(messages)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        await app(scope, replayed, send)

    with serving(recording) as url:
        yield f"{url}/mcp", seen


async def ping(
    recorder: tuple[str, list[tuple[dict[str, str], dict[str, Any]]]],
    *,
    headers: dict[str, str] | None = None,
    meta: dict[str, Any] | None = None,
) -> Received:
    """Call `ping` with the MCP SDK over an instrumented httpx2 client, in the current context;
    what the server received."""
    url, seen = recorder
    # The instrumentation reads this once per process, at its first use: the value every
    # traced process of this project sets (tests/integration/test_tracing.py runs in-process too)
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    async with httpx2.AsyncClient(headers=headers or {}) as http:
        HTTPX2ClientInstrumentor.instrument_client(http, tracer_provider=TracerProvider())
        async with Client(streamable_http_client(url, http_client=http), mode="auto") as client:
            await client.call_tool("ping", {}, meta=meta)
    got, body = next((h, b) for h, b in reversed(seen) if b.get("method") == "tools/call")
    return Received(got.get("baggage"), body["params"].get("_meta", {}).get("baggage"))


@contextmanager
def attached(ctx: Context) -> Iterator[None]:
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


async def test_the_trap_a_sandbox_member_set_only_by_hand_is_lost_once_the_context_has_baggage(
    recorder: tuple[str, list[tuple[dict[str, str], dict[str, Any]]]],
) -> None:
    by_hand = {"headers": {"baggage": KEY}, "meta": {"baggage": KEY}}
    # With no baggage in the context, what is set by hand arrives...
    assert await ping(recorder, **by_hand) == Received(KEY, KEY)
    # ...but any member in the context (a caller's, a library's) replaces it, in the header
    # (the httpx instrumentation) and in _meta (the MCP SDK): the sandbox's key is gone.
    with attached(baggage.set_baggage("user.id", "alice")):
        assert await ping(recorder, **by_hand) == Received(ALICE, ALICE)


async def test_the_fix_a_sandbox_member_set_in_the_context_reaches_header_and_meta(
    recorder: tuple[str, list[tuple[dict[str, str], dict[str, Any]]]],
) -> None:
    member, value = KEY.split("=")
    with attached(baggage.set_baggage(member, value, baggage.set_baggage("user.id", "alice"))):
        assert await ping(recorder) == Received(f"{ALICE},{KEY}", f"{ALICE},{KEY}")
