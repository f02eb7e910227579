"""The control plane's traces, received by a real OpenTelemetry Collector over OTLP/HTTP.

- an API request is a SERVER span `{method} {route}`, a child of the caller's `traceparent`,
  with the stable HTTP semantic-convention attributes;
- an outgoing httpx call made while serving it (how the Kubernetes and GitHub clients call out)
  is a CLIENT span under it, and the server it reached got a `traceparent` naming that span;
- with no OTEL_* variable, or OTEL_SDK_DISABLED=true, nothing is set up and nothing is sent;
- with the endpoint dead the API answers as before, and the lost spans are counted and logged.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandboxd import tracing
from tests.support import poll
from tests.support.otel import Collector, Span, running_collector, running_jaeger, serving
from tests.support.server import Sandboxd, free_port, running_sandboxd


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    with running_collector(tmp_path_factory.mktemp("otelcol")) as running:
        yield running


@pytest.fixture(autouse=True)
def no_otel_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says which OTEL_* variables sandboxd sees, whatever this shell exports."""
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)


def exporting_to(collector: Collector, service: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.otlp_http_url,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }


def traceparent() -> tuple[str, str, str]:
    """(trace id, span id, header value) of a caller's sampled span."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def of_service(spans: list[Span], service: str) -> list[Span]:
    return [s for s in spans if s.service == service]


def test_api_requests_are_server_spans_under_the_callers_trace(
    collector: Collector, tmp_path: Path
) -> None:
    trace_id, caller, header = traceparent()
    env = exporting_to(collector, "sandboxd-api")
    with running_sandboxd(tmp_path, env=env) as server, server.client() as api:
        assert api.get("/v1/sandboxes", headers={"traceparent": header}).status_code == 200
        missing = api.get("/v1/sandboxes/no-such", headers={"traceparent": header})
        assert missing.status_code == 404
        assert "tracing on: spans of the API and of outgoing calls go to otlp" in server.log()
    spans = collector.wait_for(
        lambda spans: len(collector.trace(trace_id)) >= 2, what=f"two spans of trace {trace_id}"
    )
    listed, unknown = sorted(
        (s for s in spans if s.trace_id == trace_id), key=lambda s: s.attributes["url.path"]
    )
    assert listed.name == "GET /v1/sandboxes" and listed.kind == "server"
    assert listed.parent == caller and listed.service == "sandboxd-api"
    assert {
        k: listed.attributes[k]
        for k in ("http.request.method", "http.route", "url.path", "http.response.status_code")
    } == {
        "http.request.method": "GET",
        "http.route": "/v1/sandboxes",
        "url.path": "/v1/sandboxes",
        "http.response.status_code": 200,
    }
    assert listed.attributes["server.address"] == "127.0.0.1"
    assert unknown.name == "GET /v1/sandboxes/{name}" and unknown.parent == caller
    assert unknown.attributes["http.response.status_code"] == 404
    assert unknown.status == "unset", "a 4xx is the caller's error, not the server's"


def test_an_outgoing_httpx_call_is_a_client_span_under_the_api_span(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pieces `create_app` wires (tracing.from_env, start, TraceRequests), in this process:
    an API route calling out with httpx, as the Kubernetes client does, to a server that
    records the headers it got."""
    for name, value in exporting_to(collector, "sandboxd-calls").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http")  # what start() sets by default
    received: list[dict[str, str]] = []

    async def record(request: Request) -> Response:
        received.append(dict(request.headers))
        return JSONResponse({"kind": "Namespace"})

    traced = tracing.from_env(CollectorRegistry())
    assert traced is not None
    traced.start()
    try:
        with serving(Starlette(routes=[Route("/api/v1/namespaces/{name}", record)])) as upstream:

            async def handler(_: Request) -> Response:
                async with httpx.AsyncClient(base_url=upstream) as client:
                    answer = await client.get("/api/v1/namespaces/shop")
                return JSONResponse(answer.json())

            app = Starlette(routes=[Route("/v1/things/{name}", handler)])
            wrapped = tracing.TraceRequests(app, tracing=traced)
            trace_id, caller, header = traceparent()
            with serving(wrapped) as api:
                # urllib: this process's httpx is traced now, and would start a trace of its own
                request = urllib.request.Request(
                    f"{api}/v1/things/x", headers={"traceparent": header}
                )
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
        assert answer == {"kind": "Namespace"}
    finally:
        traced.close()
    spans = collector.wait_for(
        lambda spans: len(collector.trace(trace_id)) >= 2, what=f"two spans of trace {trace_id}"
    )
    (server,) = [s for s in spans if s.trace_id == trace_id and s.kind == "server"]
    (client,) = [s for s in spans if s.trace_id == trace_id and s.kind == "client"]
    assert server.name == "GET /v1/things/{name}" and server.parent == caller
    assert client.parent == server.span_id and client.service == "sandboxd-calls"
    assert client.name == "GET"
    assert client.attributes["http.request.method"] == "GET"
    assert client.attributes["url.full"] == f"{upstream}/api/v1/namespaces/shop"
    assert client.attributes["http.response.status_code"] == 200
    (got,) = received
    assert got["traceparent"].split("-")[1:3] == [trace_id, client.span_id]


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
    ],
)
def test_without_an_otel_variable_asking_for_traces_nothing_is_set_up(env: dict[str, str]) -> None:
    assert tracing.from_env(CollectorRegistry(), env) is None


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "sandboxd exports by otlp or console"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "sandboxd sends OTLP over http/protobuf",
        ),
    ],
)
def test_an_unavailable_exporter_is_refused_by_name(env: dict[str, str], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        tracing.exporter_named(env)


def test_batch_sizes_the_sdk_refuses_leave_tracing_off_not_the_control_plane_down(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4")  # under the default batch of 512
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert tracing.from_env(CollectorRegistry()) is None
    assert "tracing is off: OTEL_BSP_*: max_export_batch_size" in caplog.text


def dropped(server: Sandboxd) -> float:
    with server.client() as api:
        text = api.get("/metrics").text
    return sum(
        float(v) for v in re.findall(r"^sandboxd_trace_spans_dropped_total\S* (\S+)$", text, re.M)
    )


def test_with_no_otel_variable_nothing_is_installed(tmp_path: Path) -> None:
    with running_sandboxd(tmp_path) as server, server.client() as api:
        assert api.get("/v1/sandboxes").status_code == 200
        assert "sandboxd_trace_spans_dropped_total" not in api.get("/metrics").text
        assert "tracing on" not in server.log()


def test_with_sdk_disabled_the_api_serves_and_sends_nothing(
    collector: Collector, tmp_path: Path
) -> None:
    trace_id, _, header = traceparent()
    disabled = exporting_to(collector, "sandboxd-disabled") | {"OTEL_SDK_DISABLED": "true"}
    with running_sandboxd(tmp_path / "off", env=disabled) as server, server.client() as api:
        for _ in range(5):
            assert api.get("/v1/sandboxes", headers={"traceparent": header}).status_code == 200
        assert "sandboxd_trace_spans_dropped_total" not in api.get("/metrics").text
        assert "tracing on" not in server.log()
    # Stopping flushes whatever a tracing sandboxd holds: once a later one's span is in, any
    # span of the first would be too.
    marker, _, marked = traceparent()
    on = exporting_to(collector, "sandboxd-marker")
    with running_sandboxd(tmp_path / "on", env=on) as server, server.client() as api:
        api.get("/v1/sandboxes", headers={"traceparent": marked})
    collector.wait_for(lambda spans: collector.trace(marker), what="the marker span")
    assert collector.trace(trace_id) == []
    assert of_service(collector.spans(), "sandboxd-disabled") == []


def test_a_dead_endpoint_neither_fails_the_api_nor_hides_the_loss(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": dead,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_BSP_MAX_QUEUE_SIZE": "4",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
    }
    with running_sandboxd(tmp_path, env=env) as server:
        with server.client() as api:
            statuses = [api.get("/v1/sandboxes").status_code for _ in range(40)]
        assert statuses == [200] * 40
        poll.until(lambda: dropped(server), timeout=30, what="spans counted as dropped")
        poll.until(
            lambda: "span(s) dropped" in server.log(), timeout=10, what="the drop in the log"
        )
    # stopped (SIGTERM) without waiting out the exporter's retries, and without a traceback
    assert "Traceback" not in server.log(), server.log()


def test_jaeger_finds_an_api_span_by_its_tags(tmp_path: Path) -> None:
    """The other backend an operator would run: Jaeger v2, asked by service and tags."""
    trace_id, caller, header = traceparent()
    with running_jaeger(tmp_path / "jaeger") as jaeger:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_http_url,
            "OTEL_SERVICE_NAME": "sandboxd-jaeger",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        with running_sandboxd(tmp_path / "data", env=env) as server, server.client() as api:
            assert api.get("/v1/sandboxes", headers={"traceparent": header}).status_code == 200
            missing = api.get("/v1/sandboxes/no-such", headers={"traceparent": header})
            assert missing.status_code == 404
        tags = {"http.route": "/v1/sandboxes/{name}", "http.response.status_code": "404"}
        found = poll.until(
            lambda: jaeger.find("sandboxd-jaeger", tags),
            timeout=30,
            what=f"Jaeger to find a span tagged {tags}",
        )
    assert list(found) == [trace_id]
    named = {s.name: s for s in found[trace_id]}  # the whole trace: both requests
    assert set(named) == {"GET /v1/sandboxes", "GET /v1/sandboxes/{name}"}
    unknown = named["GET /v1/sandboxes/{name}"]
    assert unknown.parent == caller and unknown.kind == "server"
    assert unknown.attributes["url.path"] == "/v1/sandboxes/no-such"
