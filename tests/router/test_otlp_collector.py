"""The router's spans at a real OpenTelemetry Collector (`tests/support/otel.py`): a burst of a
few thousand requests through the real router and its telemetry process — forked and unforked
sandbox traffic, MCP tool calls with ids, an `isError` result, a latency fault, 5xx answers,
and baseline traffic, which makes no span — and the Collector holds exactly one span for each
request that carried a sandbox's key, that span being what `spans.span_of` says of the
request's record (the router's hidden `--record-file`)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandboxd_router.telemetry import spans
from sandboxd_router.telemetry.observed import Fault, Observed
from tests.router.conftest import KEYS, start_router
from tests.router.test_record import Upstream, table
from tests.support import access_log, poll
from tests.support.otel import Collector, Span, running_collector
from tests.support.server import free_port

BURST = 3000
PARENT = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Upstream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def request(i: int) -> tuple[str, str, dict[str, Any]]:
    """The i-th request of the burst: (service, method, what httpx sends), a trace of its own."""
    headers = {"traceparent": f"00-{trace_id(i)}-{PARENT}-01"}
    key = [KEYS["pr-1"], KEYS["pr-3"], KEYS["pr-1"], KEYS["pr-1"], KEYS["pr-2"], None][i % 6]
    if key:
        headers["baggage"] = f"sandbox={key}"
    kind = i % 6
    if kind in (2, 3):  # an MCP tool call (one whose result is an error), a number or string id
        tool, rpc_id = ("describe_pod", i) if kind == 2 else ("broken", f"s{i}")
        call = {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call",
                "params": {"name": tool, "arguments": {}}}  # fmt: skip
        headers |= {"content-type": "application/json",
                    "accept": "application/json, text/event-stream"}  # fmt: skip
        return "tools", "POST", {"url": "/mcp", "content": json.dumps(call), "headers": headers}
    if kind == 1:
        return "web", "POST", {"url": f"/b/{i}", "content": b"x" * (i % 97), "headers": headers}
    path = ["/a", None, None, None, "/slowed" if i % 12 == 4 else "/status/503", "/base"][kind]
    return "web", "GET", {"url": path, "headers": headers}


def trace_id(i: int) -> str:
    return f"{i + 1:032x}"


async def burst(urls: dict[str, str]) -> None:
    """Every request of the burst, 32 at a time."""
    limit = asyncio.Semaphore(32)
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(i: int) -> None:
            service, method, what = request(i)
            async with limit:
                url = urls[service] + what.pop("url")
                await client.request(method, url, **what)

        await asyncio.gather(*(one(i) for i in range(BURST)))


@pytest.fixture
def collector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Collector]:
    with running_collector(tmp_path / "collector") as c:
        for name in [n for n in os.environ if n.startswith("OTEL_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", c.otlp_http_url)
        yield c


def test_a_collector_gets_every_span_of_a_burst(
    collector: Collector, upstream: str, tmp_path: Path
) -> None:
    routes = table(upstream)
    records_file = tmp_path / "records.jsonl"
    router = start_router(tmp_path, routes, "--record-file", str(records_file))
    try:
        tools = routes["services"][1]["routerPort"]
        poll.port_open(tools, timeout=15)
        asyncio.run(burst({"web": router.url, "tools": f"http://127.0.0.1:{tools}"}))
        records = poll.until(lambda: access_log.entries(records_file),
                             lambda r: len(r) == BURST, timeout=60, what="every record")  # fmt: skip
    finally:
        router.proc.terminate()
        router.proc.wait()
    traced = {r["traceparent"].split("-")[1]: r for r in records if r["sandbox"]}
    assert len(traced) == BURST * 5 // 6  # (the sixth: no sandbox's key, so no span)

    got = collector.wait_for(lambda s: len(router_spans(s)) >= len(traced), timeout=60,
                             what=f"the router's {len(traced)} spans")  # fmt: skip
    received = router_spans(got)
    assert sorted(s.trace_id for s in received) == sorted(traced)  # each once, no other
    assert len({s.span_id for s in received}) == len(received)
    for span in received:
        expected = spans.span_of(observed(traced[span.trace_id]))
        assert (span.name, span.kind, span.parent) == (expected.name, "server", PARENT)
        assert span.attributes == expected.attributes
        assert [(e.name, e.attributes) for e in span.events] == [
            (e.name, e.attributes) for e in expected.events
        ]
        assert span.status == ("error" if expected.failed else "unset")
    kinds = {(s.name, s.attributes.get("error.type"), bool(s.events)) for s in received}
    assert kinds >= {("GET", None, False), ("POST", None, False), ("GET", "503", False),
                     ("GET", None, True), ("tools/call describe_pod", None, False),
                     ("tools/call broken", "tool_error", False)}  # fmt: skip


def router_spans(received: list[Span]) -> list[Span]:
    return [s for s in received if s.service == "sandboxd-router"]


def observed(record: dict[str, Any]) -> Observed:
    """A `--record-file` line as the `Observed` it was written from."""
    return Observed(**(record | {"faults": tuple(Fault(**f) for f in record["faults"])}))
