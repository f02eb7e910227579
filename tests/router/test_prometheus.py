"""The router's Prometheus metrics (`sandboxd_router.telemetry.prometheus`): counted per sandbox
and service, valid exposition text, a deleted sandbox's series gone, served over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sandboxd_router.telemetry.observed import BASELINE, HTTP_5XX, OK, TOOL_ERROR, Fault, Observed
from sandboxd_router.telemetry.prometheus import PrometheusSink, serve
from tests.support.server import free_port


def observed(**more: Any) -> Observed:
    given: dict[str, Any] = {"end": 1765000000.0, "duration": 0.0004, "service": "api",
                             "sandbox": "pr-1", "routing_key": "k1", "route": BASELINE,
                             "method": "GET", "status": 200, "bytes_in": 0, "bytes_out": 10,
                             "traceparent": None, "error": OK, "injected": False}  # fmt: skip
    return Observed(**(given | more))


def samples(sink: PrometheusSink) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    families = text_string_to_metric_families(sink.render().decode())
    return {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


def test_requests_durations_faults_and_tools_are_counted() -> None:
    sink = PrometheusSink()
    sink.add(observed())
    sink.add(observed(duration=0.003))
    sink.add(observed(status=503, error=HTTP_5XX, injected=True,
                      faults=(Fault("http_error", "flaky"),)))  # fmt: skip
    sink.add(observed(sandbox="", routing_key="", service="tools", tool="describe_pod",
                      rpc_method="tools/call", error=TOOL_ERROR))  # fmt: skip
    sink.add(observed(sandbox="", routing_key="", service="tools", tool='we"ird\n',
                      rpc_method="tools/call"))  # fmt: skip
    got = samples(sink)
    pr1 = {"sandbox": "pr-1", "service": "api"}
    assert got[("sandboxd_requests_total", labels(**pr1, code="200"))] == 2
    assert got[("sandboxd_requests_total", labels(**pr1, code="503"))] == 1
    assert got[("sandboxd_request_duration_seconds_bucket", labels(**pr1, le="0.0005"))] == 2
    assert got[("sandboxd_request_duration_seconds_bucket", labels(**pr1, le="0.001"))] == 2
    assert got[("sandboxd_request_duration_seconds_bucket", labels(**pr1, le="0.005"))] == 3
    assert got[("sandboxd_request_duration_seconds_bucket", labels(**pr1, le="+Inf"))] == 3
    assert got[("sandboxd_request_duration_seconds_count", labels(**pr1))] == 3
    assert got[("sandboxd_faults_injected_total", labels(**pr1, fault="flaky"))] == 1
    tools = {"sandbox": "", "service": "tools"}
    call = labels(**tools, tool="describe_pod", outcome="tool_error")
    assert got[("sandboxd_mcp_tool_calls_total", call)] == 1
    assert (
        got[("sandboxd_mcp_tool_calls_total", labels(**tools, tool='we"ird\n', outcome="ok"))] == 1
    )


def test_a_forgotten_sandbox_has_no_series() -> None:
    sink = PrometheusSink()
    sink.add(observed())
    sink.add(observed(sandbox="pr-2", faults=(Fault("latency", "l"),), tool="t"))
    sink.forget("pr-2", "k1")
    names = {dict(key[1]).get("sandbox") for key in samples(sink)}
    assert names == {"pr-1", None}  # (None: the lost-records counter has no labels)


def test_served_over_http() -> None:
    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        sink = PrometheusSink()
        sink.add(observed())
        port = free_port()
        server = await serve(sink, "127.0.0.1", port)
        async with server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            return await client.get("/metrics"), await client.get("/other")

    metrics, other = asyncio.run(scenario())
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'sandboxd_requests_total{sandbox="pr-1",service="api",code="200"} 1' in metrics.text
    assert other.status_code == 404 and other.json()["error"] == "not_found"
