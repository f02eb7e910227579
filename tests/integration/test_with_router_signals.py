"""Signals through real traffic (issue 13): the embedded router records every request, its
telemetry process reports to the control plane, and the API's metrics, request records and
traces match what the client observed.

One sandbox without forks (its faults apply to its own traffic on the baselines) and three
services: `api` gets `http_error` at probability 0.5 (seeded), `slow` gets `latency` 200 ms,
`calm` none. The same services also take traffic without the key: the baseline side.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import wait_phase
from tests.support import poll
from tests.support.server import Sandboxd, free_port, running_sandboxd

pytestmark = pytest.mark.slow
SERVICES = ("api", "slow", "calm")
N = 120  # requests per service and side (the p99 comparison needs 100)

UPSTREAM = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        seen = {k: self.headers.get(k) for k in ("baggage", "traceparent")}
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


@dataclass
class Seen:
    """What the client observed of one request."""

    service: str
    keyed: bool
    status: int
    ms: float
    trace_id: str
    parent: str
    echoed: dict[str, Any]
    sent: dict[str, str]


@dataclass
class World:
    server: Sandboxd
    client: httpx.Client
    key: str
    ports: dict[str, int]
    seen: list[Seen]


def catalog(path: Path, script: Path, ports: dict[str, int]) -> Path:
    services = []
    for name in SERVICES:
        port = free_port()
        services.append(
            {
                "name": name,
                "protocol": "http",
                "routerPort": ports[name],
                "baseline": {
                    "url": f"http://127.0.0.1:{port}",
                    "command": [sys.executable, str(script), str(port)],
                    "health": "/",
                },
            }
        )
    path.write_text(json.dumps({"services": services}))
    return path


def call(ports: dict[str, int], service: str, key: str | None) -> Seen:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    headers = {"traceparent": f"00-{trace_id}-{parent}-01"}
    if key is not None:
        headers["baggage"] = f"team=a,sandbox={key};p=1"
    started = time.perf_counter()
    response = httpx.get(f"http://127.0.0.1:{ports[service]}/x", headers=headers, timeout=10)
    ms = (time.perf_counter() - started) * 1000
    echoed = response.json() if response.status_code == 200 else {}
    return Seen(service, key is not None, response.status_code, ms, trace_id, parent, echoed,
                headers)  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("signals")
    script = tmp / "upstream.py"
    script.write_text(UPSTREAM)
    ports = {name: free_port() for name in SERVICES}
    cat = catalog(tmp / "sandboxd.yaml", script, ports)
    faults = [
        {"id": "flaky", "service": "api", "kind": "http_error", "status": 503,
         "probability": 0.5, "seed": 7},
        {"id": "lag", "service": "slow", "kind": "latency", "latencyMs": 200},
    ]  # fmt: skip
    args = ["--with-router", "--start-baseline"]
    with (
        running_sandboxd(tmp / "data", catalog=cat, args=args) as server,
        server.client() as client,
    ):
        key = client.post("/v1/sandboxes", json={"name": "sig", "faults": faults}).json()[
            "routingKey"
        ]
        wait_phase(client, "sig", "Ready")
        poll.until(
            lambda: call(ports, "slow", key),
            lambda seen: seen.ms >= 200,
            timeout=20,
            what="the router to apply sig's faults",
            ignoring=(httpx.HTTPError,),
        )
        # interleaved: both sides of every service meet the same conditions (load, GC, ...)
        jobs = [(s, k) for _ in range(N) for s in SERVICES for k in (key, None)]
        with ThreadPoolExecutor(8) as pool:
            seen = list(pool.map(lambda job: call(ports, job[0], job[1]), jobs))
        yield World(server, client, key, ports, seen)


def metrics(world: World, **params: str) -> dict[str, Any]:
    body = world.client.get("/v1/sandboxes/sig/metrics", params={"window": "10m", **params})
    assert body.status_code == 200, body.text
    return {s["service"]: s for s in body.json()["services"]} | {"": body.json()}


def reported(world: World, **params: str) -> dict[str, Any]:
    """The metrics once every request the client made is in them (the probes come on top).

    With injected requests left out (the default), `requests` lacks them; `faultsInjected`
    counts them either way, so it is added back only then.
    """
    left_out = params.get("excludeInjected", "true") == "true"

    def sandbox_side(side: dict[str, Any]) -> int:
        return side["requests"] + (side["faultsInjected"] if left_out else 0)

    def complete(m: dict[str, Any]) -> bool:
        return all(
            s in m and m[s]["baseline"]["requests"] >= N and sandbox_side(m[s]["sandbox"]) >= N
            for s in SERVICES
        )

    return poll.until(lambda: metrics(world, **params), complete, timeout=20, what="metrics")


def test_the_forwarded_trace_headers_are_the_bytes_sent(world: World) -> None:
    for seen in world.seen:
        if seen.status == 200:
            assert seen.echoed == {
                "baggage": seen.sent.get("baggage"),
                "traceparent": seen.sent["traceparent"],
            }


def test_counts_match_what_the_client_saw_and_sides_stay_apart(world: World) -> None:
    m = reported(world, excludeInjected="false")
    for service in SERVICES:
        sandbox = [s for s in world.seen if s.service == service and s.keyed]
        errors = sum(1 for s in sandbox if s.status >= 500)
        side = m[service]["sandbox"]
        probes = side["requests"] - N  # the readiness probes of `slow`
        assert probes >= 0 and (probes == 0 or service == "slow")
        assert side["errors"] == errors
        assert side["errorsByType"]["http_5xx"] == errors
        base = m[service]["baseline"]
        assert base["requests"] == N and base["errors"] == 0
    flaky = sum(1 for s in world.seen if s.service == "api" and s.keyed and s.status == 503)
    assert N // 4 < flaky < N * 3 // 4  # the seeded draw: about half
    assert m["api"]["sandbox"]["faults"] == {"flaky": flaky}
    assert m["api"]["sandbox"]["faultsInjected"] == flaky


def test_latencies_match_what_the_client_saw(world: World) -> None:
    m = reported(world, excludeInjected="false")
    client = {s.trace_id: s.ms for s in world.seen if s.service == "slow" and s.keyed}

    def recorded() -> dict[str, float]:
        items = world.client.get(
            "/v1/sandboxes/sig/requests", params={"service": "slow", "limit": "1000"}
        ).json()["items"]
        return {i["traceId"]: i["durationMs"] for i in items}

    # (the records may come a post after the aggregates: a post holds at most MAX_ENTRIES)
    router = poll.until(recorded, lambda got: set(client) <= set(got), timeout=20,
                        what="a request record of every request the client made")  # fmt: skip
    for trace_id, ms in client.items():  # each request: the router's view inside the client's
        assert 200 <= router[trace_id] <= ms
    durations = sorted(router.values())  # the p50 is exactly the median of what was recorded
    assert m["slow"]["sandbox"]["p50Ms"] == durations[(len(durations) + 1) // 2 - 1]
    assert m["slow"]["baseline"]["p99Ms"] < 200


def test_compare_flags_exactly_the_regressed_services(world: World) -> None:
    # alpha 0.001: the faulted figures are far past it (p ~ 1e-12), while a calm figure has
    # a 1-in-1000 chance of a false alarm rather than 1 in 20 (the default alpha), per figure
    m = reported(world, excludeInjected="false", minSamples="20", alpha="0.001")
    assert m["api"]["compare"]["errorRate"]["verdict"] == "regressed"
    assert m["slow"]["compare"]["latency"]["verdict"] == "regressed"
    assert m["calm"]["compare"]["verdict"] == "pass"
    assert m["api"]["compare"]["latency"]["verdict"] == "pass"
    assert m[""]["compare"]["overall"] == "regressed"
    regressed = {(r["service"], r["figure"]) for r in m[""]["compare"]["regressed"]}
    assert ("api", "errorRate") in regressed and ("slow", "latency") in regressed
    assert not {r for r in regressed if r[0] == "calm"}


def test_injected_requests_are_left_out_by_default(world: World) -> None:
    m = reported(world)
    assert m["api"]["sandbox"]["errors"] == 0  # every 503 was injected
    assert m["slow"]["sandbox"]["requests"] == 0  # every request was delayed by the fault
    assert m["api"]["compare"]["errorRate"]["verdict"] == "pass"
    assert m["slow"]["compare"]["latency"]["verdict"] == "inconclusive"


def test_request_records_lead_to_their_traces(world: World) -> None:
    reported(world)
    failed = {s.trace_id: s for s in world.seen if s.keyed and s.status == 503}
    body = world.client.get(
        "/v1/sandboxes/sig/requests", params={"status": "5xx", "limit": "1000"}
    ).json()
    items = body["items"]
    assert {i["traceId"] for i in items} == set(failed)
    for item in items:
        assert item["service"] == "api" and item["status"] == 503 and item["injected"]
        assert item["faults"] == [{"kind": "http_error", "id": "flaky"}]
        assert item["parentSpanId"] == failed[item["traceId"]].parent
    one = items[0]
    traces = world.client.get(
        "/v1/sandboxes/sig/traces", params={"traceId": one["traceId"]}
    ).json()["items"]
    assert len(traces) == 1 and traces[0]["traceId"] == one["traceId"]
    (span,) = traces[0]["spans"]  # the router's span; its parent (the client) is not known
    assert span["spanId"] == one["spanId"] and span["parentSpanId"] == one["parentSpanId"]
    attributes = span["attributes"]
    assert attributes["sandboxd.sandbox"] == "sig"
    assert attributes["sandboxd.fault.kind"] == "http_error"
    assert attributes["sandboxd.fault.id"] == "flaky"
    assert attributes["http.response.status_code"] == 503
    assert [e["name"] for e in span["events"]] == ["sandboxd.fault.injected"]
    # a request without the key is no record of the sandbox
    unkeyed = {s.trace_id for s in world.seen if not s.keyed}
    everything = world.client.get("/v1/sandboxes/sig/requests", params={"limit": "1000"}).json()[
        "items"
    ]
    assert not unkeyed & {i["traceId"] for i in everything}
