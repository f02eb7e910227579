"""Signals (issue 13): what routers post to `/v1/router-signals` and what a harness reads back
from `/v1/sandboxes/{name}/metrics`, `/requests` and `/traces`, against a real sandboxd on
SQLite and on PostgreSQL.

The baseline's buckets are shared by every sandbox of a service, so each test invents its own
service names: its figures are exact whatever the other tests posted."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import create_engine, event, text
from sqlmodel import Session

from sandboxd.api.signals import STEP, SignalsPost, _Envelope, _validated
from sandboxd.core.errors import describe
from sandboxd.core.spec import SandboxSpec
from sandboxd.store.engine import make_engine, migrate
from sandboxd.store.repository import NewSandbox, Store
from sandboxd.store.signals import BucketIn, RecordIn, baseline_index
from tests.integration.conftest import wait_phase
from tests.support import poll
from tests.support.server import Sandboxd

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def router(api: Sandboxd) -> Iterator[httpx.Client]:
    """A client holding the router's token, as a router's telemetry process would."""
    with api.client(token=(api.data_dir / "router-token").read_text().strip()) as c:
        yield c


@pytest.fixture
def sandbox(client: httpx.Client) -> Iterator[dict[str, Any]]:
    created = client.post("/v1/sandboxes", json={"name": unique("sig")})
    assert created.status_code == 201, created.text
    yield created.json()
    client.delete(f"/v1/sandboxes/{created.json()['name']}")


def now_bucket(back: int = 0) -> int:
    """The start of the current 10 s bucket, `back` buckets ago."""
    return (int(time.time()) // 10 - back) * 10


def bucket(box: dict[str, Any] | None, service: str, **fields: Any) -> dict[str, Any]:
    """A bucket of `box` (None: the baseline's) with nothing in it but `fields`."""
    body: dict[str, Any] = {
        "sandbox": box["name"] if box else "", "routingKey": box["routingKey"] if box else "",
        "service": service, "start": now_bucket(), "width": 10, "requests": 0,
    }  # fmt: skip
    return body | fields


def record(box: dict[str, Any], seq: int, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "seq": seq, "sandbox": box["name"], "routingKey": box["routingKey"],
        "service": "cluster-mcp", "route": "sandbox", "start": time.time() - 5 + seq / 1000,
        "durationMs": 1.0, "method": "POST", "status": 200, "bytesIn": seq, "bytesOut": 2,
        "error": None, "injected": False, "faults": [], "traceId": None, "spanId": None,
        "parentSpanId": None, "rpcMethod": None, "tool": None, "rpcId": None, "name": "POST",
        "attributes": {}, "events": [],
    }  # fmt: skip
    return body | fields


def post(
    client: httpx.Client,
    instance: str,
    buckets: list[Any] | None = None,
    requests: list[Any] | None = None,
) -> httpx.Response:
    if requests is None:
        requests = []
    if buckets is None:
        buckets = []
    return client.post(
        "/v1/router-signals",
        json={"instance": instance, "buckets": buckets, "requests": requests},
    )


def metrics(client: httpx.Client, name: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/v1/sandboxes/{name}/metrics", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def service_of(body: dict[str, Any], service: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in body["services"] if s["service"] == service)
    return found


def example(box: dict[str, Any], service: str) -> dict[str, Any]:
    """The contract's example bucket, for `box`."""
    return bucket(
        box, service, requests=12, injected=3,
        errors={"http_5xx": 1, "jsonrpc": 0, "tool_error": 0, "transport": 0},
        injectedErrors={"http_5xx": 2, "jsonrpc": 0, "tool_error": 1, "transport": 0},
        faults={"slow-describe": 3}, latencyMs=[0.412, 0.52], injectedLatencyMs=[200.4],
        histogram=[0, 3, 9] + [0] * 14, bytesIn=1234, bytesOut=5678,
        tools={"describe_pod": {"calls": 4, "jsonrpcErrors": 0, "toolErrors": 1, "injected": 1}},
    )  # fmt: skip


def example_record(box: dict[str, Any], service: str) -> dict[str, Any]:
    return record(
        box, 17, service=service, start=time.time() - 3, durationMs=1.234, bytesIn=120,
        bytesOut=800, faults=[{"kind": "latency", "id": "slow-describe"}], traceId=TRACE,
        spanId="00f067aa0ba902b7", parentSpanId="b7ad6b7169203331", rpcMethod="tools/call",
        tool="describe_pod", rpcId="7", attributes={"http.request.method": "POST",
        "sandboxd.sandbox": box["name"], "http.response.status_code": 200, "ok": True},
        events=[{"name": "sandboxd.fault.injected", "time": time.time() - 3,
                 "attributes": {"sandboxd.fault.kind": "latency"}}],
    )  # fmt: skip


def test_the_contracts_example_reads_back_exactly(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    service, name = unique("mcp"), sandbox["name"]
    mine, rec = example(sandbox, service), example_record(sandbox, service)
    answer = post(router, unique("i"), [mine, example(None, service)], [rec])
    assert answer.json() == {"accepted": 3, "ignored": 0}, answer.text

    body = metrics(client, name, window="1m")
    assert (body["sandbox"], body["window"], body["excludeInjected"]) == (name, "1m", True)
    figures = service_of(body, service)
    side = {
        "requests": 9, "errors": 1, "errorRate": 1 / 9,
        "errorsByType": {"http_5xx": 1, "jsonrpc": 0, "tool_error": 0, "transport": 0},
        "p50Ms": 0.412, "p95Ms": 0.52, "p99Ms": 0.52, "samples": 2, "sampled": True,
        "faultsInjected": 3, "faults": {"slow-describe": 3},
        "tools": [{"tool": "describe_pod", "calls": 4, "jsonrpcErrors": 0, "toolErrors": 1,
                   "injected": 1}],
    }  # fmt: skip
    assert figures["sandbox"] == side and figures["baseline"] == side
    assert figures["compare"]["verdict"] == "inconclusive"
    assert figures["compare"]["latency"]["floor"] == 20
    assert figures["compare"]["p99"]["floor"] == 100
    assert body["compare"] == {"overall": "inconclusive", "alpha": 0.05, "effect": 0.2,
                               "minSamples": 20, "regressed": []}  # fmt: skip

    counted = service_of(metrics(client, name, window="1m", excludeInjected="false"), service)
    assert (counted["sandbox"]["requests"], counted["sandbox"]["errors"]) == (12, 4)
    assert counted["sandbox"]["p99Ms"] == 200.4 and counted["sandbox"]["samples"] == 3

    items = client.get(f"/v1/sandboxes/{name}/requests").json()["items"]
    expected = {k: v for k, v in rec.items() if k not in ("seq", "routingKey")}
    assert items == [expected]

    (trace,) = client.get(f"/v1/sandboxes/{name}/traces").json()["items"]
    assert trace["traceId"] == TRACE and trace["durationMs"] == pytest.approx(1.234)
    (span,) = trace["spans"]
    assert span["spanId"] == "00f067aa0ba902b7" and span["parentSpanId"] == "b7ad6b7169203331"
    assert (span["name"], span["service"], span["route"], span["status"]) == (
        "POST", service, "sandbox", 200,
    )  # fmt: skip
    assert span["attributes"] == rec["attributes"] and span["children"] == []
    assert span["start"].endswith("Z") and span["events"] == rec["events"]


def test_the_same_post_twice_an_older_copy_and_two_instances(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    service, name, start = unique("svc"), sandbox["name"], now_bucket()
    newer = bucket(sandbox, service, start=start, requests=5, latencyMs=[1.0, 2.0, 3.0, 4.0, 5.0])
    older = bucket(sandbox, service, start=start, requests=2, latencyMs=[9.0, 9.0])
    one, two = unique("i"), unique("i")
    rec = record(sandbox, 1, service=service)

    assert post(router, one, [newer], [rec]).json() == {"accepted": 2, "ignored": 0}
    assert post(router, one, [newer], [rec]).json() == {"accepted": 2, "ignored": 0}
    assert post(router, one, [older], [{**rec, "status": 500}]).is_success
    side = service_of(metrics(client, name), service)["sandbox"]
    assert (side["requests"], side["p99Ms"], side["samples"]) == (5, 5.0, 5)
    (kept,) = client.get(f"/v1/sandboxes/{name}/requests").json()["items"]
    assert kept["status"] == 200  # inserted once: the repeat changed nothing

    grown = bucket(
        sandbox, service, start=start, requests=6, latencyMs=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    )
    assert post(router, one, [grown]).is_success
    assert post(router, two, [bucket(sandbox, service, requests=1, latencyMs=[7.0])]).is_success
    earlier = bucket(sandbox, service, start=start - 20, requests=1, latencyMs=[0.5])
    assert post(router, two, [earlier], [record(sandbox, 1, service=service)]).is_success

    side = service_of(metrics(client, name), service)["sandbox"]
    assert (side["requests"], side["samples"], side["p50Ms"], side["p99Ms"]) == (8, 8, 3.0, 7.0)
    assert len(client.get(f"/v1/sandboxes/{name}/requests").json()["items"]) == 2


def test_entries_of_no_live_sandbox_are_ignored(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    service, name = unique("svc"), sandbox["name"]
    stranger = {**sandbox, "routingKey": "nosuchkey0000000"}
    misnamed = {**sandbox, "name": "someone-else"}
    entries = [bucket(stranger, service, requests=1), bucket(misnamed, service, requests=1)]
    records = [record(stranger, 1, service=service), record(misnamed, 2, service=service)]

    answer = post(router, unique("i"), entries, records)

    assert answer.json() == {"accepted": 0, "ignored": 4}, answer.text
    assert service not in [s["service"] for s in metrics(client, name)["services"]]
    assert client.get(f"/v1/sandboxes/{name}/requests").json()["items"] == []


def rows_of(api: Sandboxd, routing_key: str) -> int:
    """Rows of `routing_key` in both signal tables, read from the database itself."""
    url = api.env.get("SANDBOXD_DATABASE_URL") or f"sqlite:///{api.data_dir / 'sandboxd.db'}"
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return sum(
                int(
                    conn.execute(
                        text(f"SELECT count(*) FROM {table} WHERE routing_key = :k"),
                        {"k": routing_key},
                    ).scalar_one()
                )
                for table in ("signal_buckets", "request_records")
            )
    finally:
        engine.dispose()


def test_a_deleted_sandbox_takes_its_signals_and_its_endpoints_404(
    api: Sandboxd, client: httpx.Client, router: httpx.Client
) -> None:
    name, service = unique("gone"), unique("svc")
    old = client.post("/v1/sandboxes", json={"name": name}).json()
    assert post(router, unique("i"), [bucket(old, service, requests=1)],
                [record(old, 1, service=service)]).is_success  # fmt: skip
    assert rows_of(api, old["routingKey"]) == 2

    client.delete(f"/v1/sandboxes/{name}")
    wait_phase(client, name, "Deleted")

    assert rows_of(api, old["routingKey"]) == 0
    for path in ("metrics", "requests", "traces"):
        gone = client.get(f"/v1/sandboxes/{name}/{path}")
        assert gone.status_code == 404 and gone.json()["error"] == "not_found", gone.text
    late = post(router, unique("i"), [bucket(old, service, requests=1)])
    assert late.json() == {"accepted": 0, "ignored": 1}
    assert client.get("/v1/sandboxes/never-was/metrics").status_code == 404


def test_signals_survive_a_control_plane_restart(
    api: Sandboxd, client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    service, name = unique("svc"), sandbox["name"]
    assert post(router, unique("i"), [example(sandbox, service)],
                [example_record(sandbox, service)]).is_success  # fmt: skip
    before = [client.get(f"/v1/sandboxes/{name}/{p}").json() for p in ("requests", "traces")]
    figures = service_of(metrics(client, name), service)

    api.stop()
    api.start()

    assert service_of(metrics(client, name), service) == figures
    assert [client.get(f"/v1/sandboxes/{name}/{p}").json() for p in ("requests", "traces")] == (
        before
    )


def spread(values: list[float], per_bucket: int, box: dict[str, Any] | None, service: str,
           **fields: Any) -> list[dict[str, Any]]:  # fmt: skip
    """`values` as latency samples over consecutive buckets, `per_bucket` a bucket."""
    chunks = [values[i : i + per_bucket] for i in range(0, len(values), per_bucket)]
    return [
        bucket(box, service, start=now_bucket(n), requests=len(chunk), latencyMs=chunk, **fields)
        for n, chunk in enumerate(chunks)
    ]


def lognormal(n: int, scale: float, seed: int) -> list[float]:
    import random

    rng = random.Random(seed)
    return [round(rng.lognormvariate(0, 0.3) * scale, 3) for _ in range(n)]


def test_compare_flags_a_latency_regression_and_passes_equal_traffic(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    slow, same, name = unique("slow"), unique("same"), sandbox["name"]
    entries = [
        *spread(lognormal(200, 200.0, 1), 100, sandbox, slow),
        *spread(lognormal(400, 1.0, 2), 100, None, slow),
        *spread(lognormal(200, 1.0, 3), 100, sandbox, same),
        *spread(lognormal(400, 1.0, 4), 100, None, same),
    ]
    assert post(router, unique("i"), entries).is_success

    body = metrics(client, name)

    regressed = service_of(body, slow)["compare"]
    assert regressed["verdict"] == "regressed"
    assert regressed["latency"]["verdict"] == "regressed"
    assert regressed["latency"]["pValue"] < 1e-10 and regressed["latency"]["ratio"] > 100
    assert regressed["p99"]["verdict"] == "regressed"
    assert regressed["errorRate"]["verdict"] == "pass"
    assert service_of(body, same)["compare"]["verdict"] == "pass"
    assert body["compare"]["overall"] == "regressed"
    assert body["compare"]["regressed"] == [
        {"service": slow, "figure": "latency"}, {"service": slow, "figure": "p99"},
    ]  # fmt: skip


def test_error_regression_and_the_floor_of_samples(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    failing, quiet, name = unique("fail"), unique("quiet"), sandbox["name"]
    errors = {"http_5xx": 30, "jsonrpc": 0, "tool_error": 0, "transport": 0}
    base_errors = {"http_5xx": 1, "jsonrpc": 0, "tool_error": 0, "transport": 0}
    entries = [
        bucket(sandbox, failing, requests=100, errors=errors),
        bucket(None, failing, requests=100, errors=base_errors),
        *spread(lognormal(19, 1.0, 5), 19, sandbox, quiet),
        *spread(lognormal(400, 1.0, 6), 100, None, quiet),
    ]
    assert post(router, unique("i"), entries).is_success

    body = metrics(client, name)
    rate = service_of(body, failing)["compare"]["errorRate"]
    assert (rate["verdict"], rate["sandbox"], rate["baseline"]) == ("regressed", 0.3, 0.01)
    latency = service_of(body, quiet)["compare"]["latency"]
    assert (latency["verdict"], latency["floor"]) == ("inconclusive", 20)
    assert latency["reason"] == "fewer than 20 samples on a side"
    lowered = service_of(metrics(client, name, minSamples=10), quiet)["compare"]["latency"]
    assert lowered["verdict"] == "pass"
    strict = service_of(metrics(client, name, alpha=1e-30), failing)["compare"]["errorRate"]
    assert strict["verdict"] == "pass"


def test_injected_requests_are_left_out_unless_asked(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    """A sandbox whose only slow, failing requests are the injected ones passes by default."""
    service, name = unique("svc"), sandbox["name"]
    organic = lognormal(100, 1.0, 7)
    injected_errors = {"http_5xx": 50, "jsonrpc": 0, "tool_error": 0, "transport": 0}
    mine = bucket(
        sandbox, service, requests=150, injected=50, latencyMs=organic,
        injectedLatencyMs=[500.0] * 50, injectedErrors=injected_errors,
        faults={"boom": 50},
    )  # fmt: skip
    entries = [mine, *spread(lognormal(300, 1.0, 8), 100, None, service)]
    assert post(router, unique("i"), entries).is_success

    default = service_of(metrics(client, name), service)
    assert default["sandbox"]["requests"] == 100 and default["sandbox"]["faultsInjected"] == 50
    assert default["compare"]["verdict"] == "pass"
    counted = service_of(metrics(client, name, excludeInjected="false"), service)
    assert (counted["sandbox"]["requests"], counted["sandbox"]["errors"]) == (150, 50)
    assert counted["compare"]["verdict"] == "regressed"


def test_window_bounds(client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]) -> None:
    service, name = unique("svc"), sandbox["name"]
    old = bucket(sandbox, service, start=now_bucket(10), requests=3, latencyMs=[1.0, 1.0, 1.0])
    assert post(router, unique("i"), [old, bucket(sandbox, service, requests=1)]).is_success
    assert service_of(metrics(client, name, window="30s"), service)["sandbox"]["requests"] == 1
    assert service_of(metrics(client, name, window="5m"), service)["sandbox"]["requests"] == 4
    for bad in ("9s", "2h", "x", "0", "1000000000000000000"):
        answer = client.get(f"/v1/sandboxes/{name}/metrics", params={"window": bad})
        assert answer.status_code == 422 and answer.json()["error"], answer.text


def test_request_filters(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    name, other = sandbox["name"], unique("svc")
    fault = [{"kind": "http_error", "id": "boom"}]
    records = [
        record(sandbox, 1, status=200),
        record(sandbox, 2, status=503, error="http_5xx", injected=True, faults=fault),
        record(sandbox, 3, status=404, service=other),
        record(sandbox, 4, status=200, error="tool_error", traceId=TRACE, spanId="1" * 16),
    ]
    assert post(router, unique("i"), [], records).is_success

    def seqs(**params: Any) -> list[int]:
        answer = client.get(f"/v1/sandboxes/{name}/requests", params=params)
        assert answer.status_code == 200, answer.text
        return [r["bytesIn"] for r in answer.json()["items"]]

    assert seqs() == [4, 3, 2, 1]  # newest first
    assert seqs(limit=2) == [4, 3]
    assert seqs(status="5xx") == [2] and seqs(status="503") == [2] and seqs(status="2xx") == [4, 1]
    assert seqs(service=other) == [3]
    assert seqs(fault="boom") == [2] and seqs(fault="http_error") == [2] and seqs(fault="x") == []
    assert seqs(traceId=TRACE) == [4]
    assert seqs(error="tool_error") == [4]
    for bad in ({"status": "6xx"}, {"limit": 1001}, {"traceId": "XYZ"}, {"error": "other"}):
        answer = client.get(f"/v1/sandboxes/{name}/requests", params=bad)
        assert answer.status_code == 422 and answer.json()["error"], answer.text


def span(box: dict[str, Any], seq: int, trace: str, span_id: str, parent: str | None,
         start: float) -> dict[str, Any]:  # fmt: skip
    return record(box, seq, traceId=trace, spanId=span_id, parentSpanId=parent, start=start,
                  name=f"span {seq}")  # fmt: skip


def test_traces_are_span_trees_with_orphans_as_roots(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    name, t0 = sandbox["name"], time.time() - 10
    first, second = "a" * 32, "b" * 32
    records = [
        span(sandbox, 1, first, "0" * 15 + "1", "f" * 16, t0),  # its parent: the caller's span
        span(sandbox, 2, first, "0" * 15 + "2", "0" * 15 + "1", t0 + 0.001),
        span(sandbox, 3, first, "0" * 15 + "3", "0" * 15 + "2", t0 + 0.002),
        span(sandbox, 4, first, "0" * 15 + "4", "e" * 16, t0 + 0.003),  # parent not kept
        span(sandbox, 5, second, "0" * 15 + "5", None, t0 + 1),
        record(sandbox, 6, start=t0 + 2),  # no trace id: not a trace
    ]
    assert post(router, unique("i"), [], records).is_success

    items = client.get(f"/v1/sandboxes/{name}/traces").json()["items"]

    assert [t["traceId"] for t in items] == [second, first]  # newest first
    roots = items[1]["spans"]
    assert [(s["name"], s["parentSpanId"]) for s in roots] == [
        ("span 1", "f" * 16), ("span 4", "e" * 16),
    ]  # fmt: skip
    (child,) = roots[0]["children"]
    assert child["name"] == "span 2" and [c["name"] for c in child["children"]] == ["span 3"]
    assert items[1]["durationMs"] == pytest.approx(4.0, abs=1e-3)
    only = client.get(f"/v1/sandboxes/{name}/traces", params={"traceId": first}).json()
    assert [t["traceId"] for t in only["items"]] == [first]
    assert [t["traceId"] for t in client.get(f"/v1/sandboxes/{name}/traces",
                                             params={"limit": 1}).json()["items"]] == [second]  # fmt: skip


def hostile_bodies(box: dict[str, Any]) -> list[Any]:
    good = {"instance": "i1", "buckets": [bucket(box, "svc", requests=2, latencyMs=[1.0])],
            "requests": [record(box, 1)]}  # fmt: skip

    def bad_bucket(**fields: Any) -> dict[str, Any]:
        return {**good, "buckets": [{**good["buckets"][0], **fields}]}

    def bad_record(**fields: Any) -> dict[str, Any]:
        return {**good, "requests": [{**good["requests"][0], **fields}]}

    many = [bucket(box, "svc", start=now_bucket(n), requests=0) for n in range(1001)]
    return [
        [], None, "x", {**good, "instance": ""}, {**good, "instance": "a b"},
        {**good, "extra": 1}, {**good, "buckets": many},
        {**good, "buckets": good["buckets"] * 2},  # the same bucket twice
        {**good, "requests": good["requests"] * 2},  # the same seq twice
        bad_bucket(requests=-1), bad_bucket(requests=2**53 + 1), bad_bucket(requests="2"),
        bad_bucket(requests=True), bad_bucket(requests=1.5), bad_bucket(start=now_bucket() + 1),
        bad_bucket(width=0), bad_bucket(width=61), bad_bucket(injected=3),
        bad_bucket(errors={"http_5xx": 3}), bad_bucket(errors={"other": 1}),
        bad_bucket(latencyMs=[1.0] * 3), bad_bucket(latencyMs=[-1.0]),
        bad_bucket(latencyMs=["1"]), bad_bucket(requests=600, latencyMs=[1.0] * 513),
        bad_bucket(histogram=[1, 2]), bad_bucket(sandbox=""), bad_bucket(sandbox="x" * 64),
        bad_bucket(service=""), bad_bucket(service="a b"), bad_bucket(service="s" * 64),
        bad_bucket(tools={"t\u0000": {"calls": 1}}), bad_bucket(tools={"t": {"calls": -1}}),
        bad_bucket(faults={"": 1}), bad_bucket(routingKey="k" * 65),
        bad_record(seq=-1), bad_record(sandbox=""), bad_record(route="elsewhere"),
        bad_record(status=1000), bad_record(error="oops"), bad_record(traceId="XYZ"),
        bad_record(spanId="0" * 15), bad_record(injected="yes"), bad_record(name=""),
        bad_record(attributes={"k": {"nested": 1}}), bad_record(attributes={"k": 2**64}),
        bad_record(attributes={f"k{i}": 1 for i in range(65)}), bad_record(faults=[{"id": "x"}]),
        bad_record(events=[{"name": "e", "time": -1}]), bad_record(method="GET POST"),
        bad_record(tool="x" * 257), bad_record(rpcId="\u001b[31m"),
    ]  # fmt: skip


def test_hostile_bodies_get_422_and_store_nothing(
    api: Sandboxd, client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    for body in hostile_bodies(sandbox):
        answer = router.post("/v1/router-signals", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"] == "invalid_request" and answer.json()["message"]
    for text_body in ('{"instance": "i", "buckets": [{"requests": NaN}]}', "[" * 10_000, "{"):
        answer = router.post("/v1/router-signals", content=text_body,
                             headers={"Content-Type": "application/json"})  # fmt: skip
        assert answer.status_code in (400, 422) and answer.json()["error"], answer.text
    huge = router.post("/v1/router-signals", content=b" " * (8 * 1024 * 1024 + 1),
                       headers={"Content-Type": "application/json"})  # fmt: skip
    assert huge.status_code == 413
    assert rows_of(api, sandbox["routingKey"]) == 0
    assert "Traceback" not in api.log()


async def test_a_post_is_validated_in_steps_as_the_whole_body_would_be() -> None:
    """`router_signals` validates a post entry by entry, handing the event loop to the other
    calls every `STEP` entries; it refuses what one validation of the whole body
    (`SignalsPost`, the documented model) refuses, naming the same problems."""
    box = {"name": "steps", "routingKey": "stepskey"}

    async def problems(body: Any, validate: bool) -> list[dict[str, str]]:
        try:
            if validate:
                SignalsPost.model_validate(body)
            else:
                await _validated(_Envelope.model_validate(body))
        except (ValidationError, RequestValidationError) as e:
            return describe(e.errors())
        return []

    for body in hostile_bodies(box):
        whole = await problems(body, True)
        assert whole and await problems(body, False) == whole, body

    turns = 0

    async def another_call() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(another_call())
    await asyncio.sleep(0)
    many = [bucket(box, "svc", start=now_bucket(n), requests=0) for n in range(1000)]
    before = turns
    buckets, _ = await _validated(_Envelope.model_validate({"instance": "i", "buckets": many}))
    other.cancel()
    assert len(buckets) == 1000 and turns - before >= 1000 // STEP - 1


def test_a_mutated_valid_post_is_never_a_5xx(
    api: Sandboxd, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    """Every leaf of a valid post replaced, one at a time, by each of a set of awkward values:
    a 200 or a 422, never more."""
    body = {"instance": "i2", "buckets": [example(sandbox, "svc"), example(None, "svc")],
            "requests": [example_record(sandbox, "svc")]}  # fmt: skip
    awkward: list[Any] = [None, -1, 2**64, "", "x" * 5000, {}, True, "\u202e"]
    for path in _leaves(body):
        for value in awkward:
            mutated = copy.deepcopy(body)
            _set(mutated, path, value)
            answer = router.post("/v1/router-signals", content=json.dumps(mutated),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
            assert answer.status_code in (200, 422), (path, value, answer.text)
    assert "Traceback" not in api.log()


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    children = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else None  # fmt: skip
    if children is None:
        yield path
        return
    for key, child in list(children)[:20]:
        yield from _leaves(child, (*path, key))


def _set(target: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def test_the_router_token_may_post_signals_but_not_read_them(
    router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    assert post(router, unique("i"), []).status_code == 200
    refused = router.get(f"/v1/sandboxes/{sandbox['name']}/metrics")
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"


def test_the_sweep_drops_buckets_past_the_longest_window(
    api: Sandboxd, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    """Buckets are kept an hour (plus the widest bucket); the sweep (every second here) drops
    older ones, and keeps the rest."""
    service = unique("svc")
    stale = bucket(sandbox, service, start=now_bucket(60 * 6 + 7), requests=1)
    fresh = bucket(sandbox, service, requests=1)
    assert post(router, unique("i"), [stale, fresh]).json()["accepted"] == 2
    poll.until(lambda: rows_of(api, sandbox["routingKey"]), lambda n: n == 1,
               timeout=20, what="the stale bucket to be swept")  # fmt: skip


async def test_retention_keeps_an_hour_of_buckets_and_the_newest_records(
    database_url: str,
) -> None:
    """The sweep's pass (`Store.prune_signals`), on the store itself: buckets older than the
    longest window go, the baseline's and the fresh ones stay; each sandbox keeps its newest
    1,000 records; rows of a routing key no sandbox holds (a post that raced a delete) go."""
    engine = make_engine(database_url)
    migrate(engine)
    store = Store(engine)
    row, _ = await store.create(
        NewSandbox(spec=SandboxSpec(name="kept"), labels={}, ttl_seconds=600, request_hash="h")
    )
    now = time.time()
    start = int(now) // 10 * 10

    def bucket_in(key: str, name: str, at: int) -> BucketIn:
        return BucketIn(name, key, "svc", at, 10, 1, json.dumps({"requests": 1, "start": at}))

    def record_in(key: str, name: str, seq: int) -> RecordIn:
        return RecordIn(name, key, seq, "svc", now - 2000 + seq, 200, None, None, "{}")

    buckets = [bucket_in(row.routing_key, "kept", start - 10 * n) for n in (0, 360, 367)]
    buckets.append(bucket_in("", "", start - 3670))
    for first in (0, 1000):
        records = [record_in(row.routing_key, "kept", s) for s in range(first, first + 1000)]
        await store.store_signals(instance="i", buckets=buckets, records=records[:1000])
    with engine.begin() as conn:  # rows of a sandbox deleted while its post was in flight
        for table, values in (
            ("signal_buckets", "('ghostkey000000', :s, 'svc', 'i', 10, 1, '{}')"),
            ("request_records", "('i', 5000, 'ghostkey000000', 'svc', :s, 200, NULL, NULL, '{}')"),
        ):
            conn.execute(text(f"INSERT INTO {table} VALUES {values}"), {"s": start})

    await store.prune_signals(now=now)

    with engine.connect() as conn:
        starts = conn.execute(text("SELECT routing_key, start FROM signal_buckets")).all()
        seqs = [s for (s,) in conn.execute(text("SELECT seq FROM request_records")).all()]
    assert sorted(starts) == sorted([(row.routing_key, start), (row.routing_key, start - 3600)])
    assert sorted(seqs) == list(range(1000, 2000))
    await store.close()
    engine.dispose()


def test_the_baseline_read_back_follows_every_change(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    """The baseline's side is cached while its buckets stay the same: a re-sent open bucket, a
    new router instance and a window that no longer holds a bucket each show at once."""
    service, name, start = unique("svc"), sandbox["name"], now_bucket()
    one, two = unique("i"), unique("i")

    def baseline(**params: Any) -> tuple[int, list[float | None]]:
        side = service_of(metrics(client, name, **params), service)["baseline"]
        return side["requests"], [side["p50Ms"], side["p99Ms"]]

    mine = bucket(sandbox, service, start=start, requests=1, latencyMs=[1.0])
    old = bucket(None, service, start=start - 60, requests=1, latencyMs=[50.0])
    assert post(router, one, [mine, old, bucket(None, service, start=start, requests=2,
                latencyMs=[2.0, 4.0])]).is_success  # fmt: skip
    assert baseline() == (3, [4.0, 50.0])
    assert baseline(window="30s") == (2, [2.0, 4.0])

    grown = bucket(None, service, start=start, requests=3, latencyMs=[2.0, 4.0, 3.0])
    assert post(router, one, [grown]).is_success
    assert baseline(window="30s") == (3, [3.0, 4.0])
    assert post(
        router, two, [bucket(None, service, start=start, requests=1, latencyMs=[9.0])]
    ).is_success
    assert baseline(window="30s") == (4, [3.0, 9.0])
    assert baseline() == (5, [4.0, 50.0])
    assert baseline(window="30s", excludeInjected="false") == (4, [3.0, 9.0])


async def test_a_post_of_baseline_buckets_merges_the_windows_asked_for(
    database_url: str,
) -> None:
    """The baseline's side (some 100,000 samples to merge) is made when a router posts, not
    when a harness next asks: after a post, the window asked for last is in the cache with
    the post in it, and that is what the next read gives."""
    engine = make_engine(database_url)
    migrate(engine)
    store = Store(engine)
    row, _ = await store.create(
        NewSandbox(spec=SandboxSpec(name="asks"), labels={}, ttl_seconds=600, request_hash="h")
    )
    start = now_bucket()

    def baseline(requests: int) -> BucketIn:
        data = {"requests": requests, "latencyMs": [float(n) for n in range(requests)]}
        return BucketIn("", "", "svc", start, 10, requests, json.dumps(data))

    async def read() -> Any:
        _, theirs = await store.signal_sides(
            routing_key=row.routing_key, now=time.time(), window=300, exclude_injected=True
        )
        return theirs["svc"]

    await store.store_signals(instance="i", buckets=[baseline(2)], records=[])
    assert (await read()).requests == 2
    await store.store_signals(instance="i", buckets=[baseline(5)], records=[])
    with Session(engine) as session:
        index = baseline_index(session, since=time.time() - 300)
    ready = store._baseline.get(index, True)  # what the next call finds
    assert ready is not None and ready["svc"].latencies == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert await read() is ready["svc"]
    await store.close()
    engine.dispose()


async def test_the_baselines_side_is_ready_before_a_post_commits(database_url: str) -> None:
    """A harness's call that sees a post of baseline buckets never waits for their merge:
    the side of the window asked for, with the post in it, is in the cache when the post's
    transaction commits."""
    engine = make_engine(database_url)
    migrate(engine)
    store = Store(engine)
    row, _ = await store.create(
        NewSandbox(spec=SandboxSpec(name="ready"), labels={}, ttl_seconds=600, request_hash="h")
    )
    start = now_bucket()
    await store.signal_sides(  # asks for the 5-minute window
        routing_key=row.routing_key, now=time.time(), window=300, exclude_injected=True
    )
    at_commit: list[bool] = []

    def commit(_connection: Any) -> None:
        at_commit.append(store._baseline.get((("svc", start, "i", 3),), True) is not None)

    event.listen(engine, "commit", commit)
    data = json.dumps({"requests": 3, "latencyMs": [1.0, 2.0, 3.0]})
    await store.store_signals(
        instance="i", buckets=[BucketIn("", "", "svc", start, 10, 3, data)], records=[]
    )
    event.remove(engine, "commit", commit)
    assert at_commit == [True]
    await store.close()
    engine.dispose()


async def test_a_call_whose_baseline_is_ready_does_not_wait_for_a_merge(
    database_url: str,
) -> None:
    """While another thread merges a baseline's side (holding the cache's lock), a call whose
    side is ready is answered from the cache."""
    engine = make_engine(database_url)
    migrate(engine)
    store = Store(engine)
    row, _ = await store.create(
        NewSandbox(spec=SandboxSpec(name="nowait"), labels={}, ttl_seconds=600, request_hash="h")
    )
    data = json.dumps({"requests": 3, "latencyMs": [1.0, 2.0, 3.0]})
    await store.store_signals(
        instance="i", buckets=[BucketIn("", "", "svc", now_bucket(), 10, 3, data)], records=[]
    )

    async def read() -> Any:
        _, theirs = await store.signal_sides(
            routing_key=row.routing_key, now=time.time(), window=300, exclude_injected=True
        )
        return theirs["svc"]

    ready = await read()
    store._baseline.lock.acquire()  # a merge under way
    try:
        assert await asyncio.wait_for(read(), timeout=60) is ready  # (a guard against a hang)
    finally:
        store._baseline.lock.release()
    await store.close()
    engine.dispose()


async def test_a_client_asking_for_many_windows_keeps_only_the_last_few_ready(
    database_url: str,
) -> None:
    """Every window asked for is merged again by each refresh: their number is bounded, the
    longest unasked going first, so a client cycling through windows cannot keep the store
    merging."""
    engine = make_engine(database_url)
    migrate(engine)
    store = Store(engine)
    row, _ = await store.create(
        NewSandbox(spec=SandboxSpec(name="windows"), labels={}, ttl_seconds=600, request_hash="h")
    )
    for window in range(60, 600, 10):
        await store.signal_sides(
            routing_key=row.routing_key, now=time.time(), window=window, exclude_injected=True
        )
    assert sorted(store._baseline.wanted) == [(570, True), (580, True), (590, True)]
    await store.close()
    engine.dispose()


async def test_a_window_reads_back_whole_whatever_the_names_hold(database_url: str) -> None:
    """A metrics call reads a window's buckets, and the baseline's index, each as one row the
    database joins: names with quotes, commas, brackets and backslashes (a `Token` may hold
    them) still come back each with its own bucket, and the index exact and sorted."""
    engine = make_engine(database_url)
    migrate(engine)
    store = Store(engine)
    row, _ = await store.create(
        NewSandbox(spec=SandboxSpec(name="joined"), labels={}, ttl_seconds=600, request_hash="h")
    )
    start, services = now_bucket(), ['q"uote', "com,ma", "[br]", "back\\slash", "plain"]

    def bucket_in(key: str, service: str, at: int, n: int) -> BucketIn:
        data = {"requests": n, "latencyMs": [float(n)] * n, "tools": {service: {"calls": n}}}
        return BucketIn("joined" if key else "", key, service, at, 10, n, json.dumps(data))

    mine = [bucket_in(row.routing_key, s, start - 10 * k, i + k + 1)
            for i, s in enumerate(services) for k in range(3)]  # fmt: skip
    base = [bucket_in("", s, start - 10 * k, 7) for s in services for k in range(2)]
    await store.store_signals(instance="one", buckets=mine + base, records=[])
    await store.store_signals(instance="two.2", buckets=base[:3], records=[])

    sides, theirs = await store.signal_sides(
        routing_key=row.routing_key, now=time.time(), window=300, exclude_injected=True
    )
    assert {s: (v.requests, sorted(set(v.latencies)), list(v.tools)) for s, v in sides.items()} == {
        s: (3 * i + 6, [float(i + 1), float(i + 2), float(i + 3)], [s])
        for i, s in enumerate(services)
    }
    assert {s: v.requests for s, v in theirs.items()} == {
        s: 14 + 7 * sum(b.service == s for b in base[:3]) for s in services
    }
    with Session(engine) as session:
        index = baseline_index(session, since=time.time() - 300)
    expected = [(b.service, b.start, "one", 7) for b in base]
    expected += [(b.service, b.start, "two.2", 7) for b in base[:3]]
    assert index == tuple(sorted(expected))
    await store.close()
    engine.dispose()
