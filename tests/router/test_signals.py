"""The signals sink's aggregation, request records and spans, from synthetic `Observed`
requests (pure: nothing is posted here; `test_signals_post.py` posts to a real server)."""

from __future__ import annotations

import itertools
import re
import tracemalloc
from collections import deque
from random import Random
from typing import Any

import orjson
import pytest

from sandboxd_router.telemetry import request_wire, spans, traceparent
from sandboxd_router.telemetry.buckets import HISTOGRAM_MS
from sandboxd_router.telemetry.observed import (
    BASELINE,
    HTTP_5XX,
    JSONRPC,
    OK,
    SANDBOX,
    TOOL_ERROR,
    TRANSPORT,
    Fault,
    Observed,
)
from sandboxd_router.telemetry.prometheus import PrometheusSink
from sandboxd_router.telemetry.request_wire import RecordText
from sandboxd_router.telemetry.signals import SignalsSink
from sandboxd_router.telemetry.tally import Fifo, Tally

T0 = 1_765_000_000.0  # a multiple of 10
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SLOW = Fault("latency", "slow-describe")


SEQ = itertools.count()


def observed(**changes: Any) -> Observed:
    values: dict[str, Any] = {
        "end": T0 + 1,
        "duration": 0.001,
        "service": "cluster-mcp",
        "sandbox": "pr-1",
        "routing_key": "k3y",
        "route": SANDBOX,
        "method": "POST",
        "status": 200,
        "bytes_in": 100,
        "bytes_out": 1000,
        "traceparent": None,
        "error": OK,
        "injected": False,
    }
    values.update(changes)
    return Observed(**({"seq": next(SEQ)} | values))  # each its own ring record


def sink(seed: int = 7) -> SignalsSink:
    return SignalsSink(url="http://127.0.0.1:9", token="t", rng=Random(seed))


def only_bucket(s: SignalsSink) -> dict[str, Any]:
    buckets, _ = s.outbox()
    assert len(buckets) == 1
    return buckets[0]


def test_latencies_under_the_cap_are_every_sample_exactly() -> None:
    s = sink()
    durations_ms = [0.001 * i + 0.25 for i in range(512)]
    for ms in durations_ms:
        s.add(observed(duration=ms / 1000))
    bucket = only_bucket(s)
    assert sorted(bucket["latencyMs"]) == pytest.approx(durations_ms, abs=5e-4)
    assert bucket["requests"] == 512 and bucket["injectedLatencyMs"] == []


def test_past_the_cap_the_samples_are_a_bounded_uniform_reservoir() -> None:
    s = sink()
    for i in range(1000):  # injected first: they must not count as organic ones seen
        s.add(observed(duration=(i + 1) / 1e6, injected=True, faults=(SLOW,)))
    for i in range(5000):
        s.add(observed(duration=(i + 1) / 1e6))  # i+1 µs: the order of arrival
    bucket = only_bucket(s)
    organic, injected = bucket["latencyMs"], bucket["injectedLatencyMs"]
    assert len(organic) == 512 and len(injected) == 128
    assert set(organic) <= {(i + 1) / 1000 for i in range(5000)}
    # uniform over the whole stream, not the first (or last) 512 seen: about half from each half
    late = sum(1 for ms in organic if ms > 2.5) / len(organic)
    assert 0.4 < late < 0.6
    late_injected = sum(1 for ms in injected if ms > 0.5) / len(injected)
    assert 0.35 < late_injected < 0.65
    assert bucket["requests"] == 6000 and bucket["injected"] == 1000


def test_the_histogram_counts_every_request_at_the_first_bound_not_below_it() -> None:
    s = sink()
    for ms in (0.05, 0.1, 0.101, 1, 9.999, 10000, 10000.5, 60000):
        s.add(observed(duration=ms / 1000))
    s.add(observed(duration=0.2, injected=True, faults=(SLOW,)))  # injected ones count too
    histogram = only_bucket(s)["histogram"]
    assert len(histogram) == len(HISTOGRAM_MS) + 1 == 17
    expected = [0] * 17
    for slot in (0, 0, 1, 3, 6, 15, 16, 16, 10):
        expected[slot] += 1
    assert histogram == expected


def test_errors_of_organic_and_injected_requests_are_counted_apart() -> None:
    s = sink()
    for error in (HTTP_5XX, HTTP_5XX, TRANSPORT, OK, OK):
        s.add(observed(error=error, status=502 if error == HTTP_5XX else 200))
    flaky = Fault("http_error", "flaky")
    s.add(observed(error=JSONRPC, injected=True, faults=(flaky,)))
    s.add(observed(error=TOOL_ERROR, injected=True, faults=(flaky, SLOW)))
    s.add(observed(error=OK, injected=True, faults=(SLOW,), duration=0.2))
    bucket = only_bucket(s)
    assert bucket["requests"] == 8 and bucket["injected"] == 3
    assert bucket["errors"] == {"http_5xx": 2, "jsonrpc": 0, "tool_error": 0, "transport": 1}
    assert bucket["injectedErrors"] == {
        "http_5xx": 0, "jsonrpc": 1, "tool_error": 1, "transport": 0,
    }  # fmt: skip
    assert bucket["faults"] == {"flaky": 2, "slow-describe": 2}
    assert len(bucket["latencyMs"]) == 5 and len(bucket["injectedLatencyMs"]) == 3
    assert 200.0 in bucket["injectedLatencyMs"] and 200.0 not in bucket["latencyMs"]


def test_mcp_tools_are_counted_per_tool() -> None:
    s = sink()
    call = {"rpc_method": "tools/call", "rpc_id": "1"}
    s.add(observed(**call, tool="describe_pod"))
    s.add(observed(**call, tool="describe_pod", error=TOOL_ERROR))
    s.add(observed(**call, tool="describe_pod", error=JSONRPC, injected=True, faults=(SLOW,)))
    s.add(observed(**call, tool="get_logs", error=JSONRPC))
    s.add(observed(rpc_method="tools/list", rpc_id="2"))  # no tool: not a tool's call
    bucket = only_bucket(s)
    assert bucket["tools"] == {
        "describe_pod": {"calls": 3, "jsonrpcErrors": 1, "toolErrors": 1, "injected": 1},
        "get_logs": {"calls": 1, "jsonrpcErrors": 1, "toolErrors": 0, "injected": 0},
    }


def test_sandbox_and_baseline_traffic_are_kept_apart_and_bucketed_by_end() -> None:
    s = sink()
    s.add(observed(bytes_in=10, bytes_out=20))
    s.add(observed(sandbox="", routing_key="", route=BASELINE, bytes_in=1, bytes_out=2))
    s.add(observed(sandbox="", routing_key="", route=BASELINE, service="logs-mcp"))
    # a key without a fork is served by the baseline, but is still that sandbox's traffic
    s.add(observed(sandbox="pr-2", routing_key="k2", route=BASELINE))
    s.add(observed(end=T0 + 10.5, duration=1.0))  # began in the first window, ended in the next
    s.add(observed(service="-", status=404))  # no service was routed: no service's figures
    buckets, requests = s.outbox()
    by_key = {(b["sandbox"], b["routingKey"], b["service"], b["start"]): b for b in buckets}
    assert set(by_key) == {
        ("pr-1", "k3y", "cluster-mcp", T0),
        ("", "", "cluster-mcp", T0),
        ("", "", "logs-mcp", T0),
        ("pr-2", "k2", "cluster-mcp", T0),
        ("pr-1", "k3y", "cluster-mcp", T0 + 10),
    }
    assert all(b["width"] == 10 and b["requests"] == 1 for b in buckets)
    assert by_key[("pr-1", "k3y", "cluster-mcp", T0)]["bytesIn"] == 10
    assert by_key[("", "", "cluster-mcp", T0)]["bytesOut"] == 2
    # only requests with a sandbox's key are recorded, in order, each with its own span id
    assert [(r["seq"], r["sandbox"], r["route"]) for r in requests] == [
        (1, "pr-1", SANDBOX), (2, "pr-2", BASELINE), (3, "pr-1", SANDBOX),
    ]  # fmt: skip
    span_ids = [r["spanId"] for r in requests]
    assert all(re.fullmatch("[0-9a-f]{16}", i) and i != "0" * 16 for i in span_ids)
    assert len(set(span_ids)) == 3


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE}-{PARENT}-01", (TRACE, PARENT)),
        (f"00-{TRACE}-{PARENT}-00", (TRACE, PARENT)),  # not sampled: still the parent
        (f"  00-{TRACE}-{PARENT}-01\t", (TRACE, PARENT)),  # whitespace around a value
        (f"cc-{TRACE}-{PARENT}-01-what-comes-next", (TRACE, PARENT)),  # a future version
        (f"cc-{TRACE}-{PARENT}-01", (TRACE, PARENT)),
        (f"cc-{TRACE}-{PARENT}-01x", None),  # a longer future header: a dash after 4 fields
        (f"00-{TRACE}-{PARENT}-01-extra", None),  # version 00 is exactly 55 characters
        (f"ff-{TRACE}-{PARENT}-01", None),  # version ff is invalid
        (f"00-{'0' * 32}-{PARENT}-01", None),
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"00-{TRACE.upper()}-{PARENT}-01", None),  # lowercase hex only
        (f"00-{TRACE}-{PARENT}-1", None),
        (f"00-{TRACE[:-1]}-{PARENT}-01", None),
        (f"00-{TRACE}g-{PARENT}-01", None),
        (f"00_{TRACE}_{PARENT}_01", None),
        ("0x-" + TRACE + "-" + PARENT + "-01", None),
        ("garbage", None),
        ("", None),
        (None, None),
        # each field in turn: uppercase, not hex, a dash out of place, all zeros
        (f"0A-{TRACE}-{PARENT}-01", None),
        (f"00-{TRACE}-{PARENT}-0A", None),
        (f"00-{TRACE}-{PARENT.upper()}-01", None),
        (f"00-{TRACE[:31]}F-{PARENT}-01", None),
        (f"00-{TRACE[:31]}-{PARENT}-01-", None),
        (f"00-{TRACE[:10]}-{TRACE[11:]}-{PARENT}-01", None),
        (f"00-{TRACE}-{PARENT[:5]}-{PARENT[6:]}-01", None),
        (f"00-{TRACE}-{PARENT}--1", None),
        (f"00-{TRACE}-{PARENT}-0-", None),
        (f"-00{TRACE}-{PARENT}-01", None),
        (f"00-{TRACE}-{PARENT}-0g", None),
        (f"g0-{TRACE}-{PARENT}-01", None),
        (f"00-{TRACE}-{PARENT}-0 ", None),
        (f"00-{TRACE[:20]} {TRACE[21:]}-{PARENT}-01", None),
        (f"00-{TRACE[:30]}é-{PARENT}-01", None),
        (f"00-{TRACE}-{PARENT}-01é", None),  # (56 characters, version 00)
        (f"cc-{TRACE}-{PARENT}-01-é", (TRACE, PARENT)),  # what a later version adds: not read
        (f"00-{'0' * 31}1-{PARENT}-01", (f"{'0' * 31}1", PARENT)),
        (f"00-{TRACE}-{'0' * 15}1-01", (TRACE, f"{'0' * 15}1")),
        (f"fe-{TRACE}-{PARENT}-ff", (TRACE, PARENT)),
        (f"ff-{TRACE}-{PARENT}-01-more", None),
        (f"f0-{TRACE}-{PARENT}-01", (TRACE, PARENT)),
        (f"0f-{TRACE}-{PARENT}-01", (TRACE, PARENT)),
        (f"00-{'0123456789' * 3}ab-{'0123456789' * 1}abcdef-01", (f"{'0123456789' * 3}ab",
                                                               "0123456789abcdef")),
        (f"\t00-{TRACE}-{PARENT}-01", (TRACE, PARENT)),
        (f"\n00-{TRACE}-{PARENT}-01", None),
        (" " * 3, None),
    ],
)  # fmt: skip
def test_traceparent(header: str | None, expected: tuple[str, str] | None) -> None:
    """The header's text and the bytes the request path records are read alike."""
    assert traceparent.parse(header) == expected
    raw = (header or "").encode("utf-8")
    got = traceparent.ids_of(raw)
    assert (None if got is None else (got[0].hex(), got[1].hex())) == expected


def test_span_ids_are_unique_and_never_zero() -> None:
    """`spans.span_id` is one-to-one on the ring's numbers (below 2**64), across the halves'
    boundary too, and the OTLP encoder's halves are its bytes."""
    seqs = [*range(60_000), *range((1 << 32) - 30_000, (1 << 32) + 30_000), 1 << 40,
            (1 << 63) + 5, (1 << 64) - 1]  # fmt: skip
    ids = {spans.span_id(seq) for seq in seqs}
    assert len(ids) == len(seqs) and "0" * 16 not in ids
    assert all(re.fullmatch("[0-9a-f]{16}", i) for i in ids)
    first, last = spans.span_halves(17)
    assert spans.span_id(17) == (first.to_bytes(4, "little") + last.to_bytes(4, "little")).hex()


def test_a_request_record_carries_its_trace_span_and_fault() -> None:
    s = sink()
    s.add(
        observed(
            end=T0 + 2.0,
            duration=0.25,
            traceparent=f"00-{TRACE}-{PARENT}-01",
            error=TOOL_ERROR,
            injected=True,
            faults=(Fault("tool_error", "broken-describe"),),
            injected_at=0.125,
            rpc_method="tools/call",
            tool="describe_pod",
            rpc_id='"a-7"',
        )
    )
    s.add(observed(traceparent=f"00-{'0' * 32}-{PARENT}-01"))
    _, (record, invalid) = s.outbox()
    assert record["traceId"] == TRACE and record["parentSpanId"] == PARENT
    assert invalid["traceId"] is None and invalid["parentSpanId"] is None
    assert record["start"] == pytest.approx(T0 + 1.75)
    assert record["durationMs"] == 250.0 and record["error"] == "tool_error"
    assert invalid["error"] is None
    assert record["faults"] == [{"kind": "tool_error", "id": "broken-describe"}]
    assert (record["rpcMethod"], record["tool"], record["rpcId"]) == (
        "tools/call", "describe_pod", '"a-7"',
    )  # fmt: skip
    assert record["name"] == "tools/call describe_pod"
    assert record["attributes"] == {
        "http.request.method": "POST",
        "http.response.status_code": 200,
        "error.type": "tool_error",
        "http.request.body.size": 100,
        "http.response.body.size": 1000,
        "url.scheme": "http",
        "sandboxd.sandbox": "pr-1",
        "sandboxd.route": "sandbox",
        "sandboxd.service": "cluster-mcp",
        "sandboxd.fault.kind": "tool_error",
        "sandboxd.fault.id": "broken-describe",
        "mcp.method.name": "tools/call",
        "jsonrpc.request.id": "a-7",
        "gen_ai.tool.name": "describe_pod",
        "gen_ai.operation.name": "execute_tool",
    }
    (event,) = record["events"]
    assert event["name"] == "sandboxd.fault.injected"
    assert event["time"] == pytest.approx(T0 + 1.875)
    assert event["attributes"] == {
        "sandboxd.fault.kind": "tool_error", "sandboxd.fault.id": "broken-describe",
    }  # fmt: skip


def test_http_span_names_and_outcomes() -> None:
    plain = spans.span_of(observed(method="GET", route=BASELINE))
    assert (plain.name, plain.kind, plain.failed) == ("GET", "server", False)
    assert plain.events == [] and "error.type" not in plain.attributes
    assert "mcp.method.name" not in plain.attributes
    assert "sandboxd.sandbox" not in spans.span_of(observed(sandbox="", route=BASELINE)).attributes
    odd = spans.span_of(observed(method="get"))  # methods are case-sensitive
    assert odd.name == "HTTP"
    assert odd.attributes["http.request.method"] == "_OTHER"
    assert odd.attributes["http.request.method_original"] == "get"
    assert "http.request.method_original" not in plain.attributes
    unavailable = spans.span_of(observed(status=503, error=HTTP_5XX))
    assert unavailable.attributes["error.type"] == "503" and unavailable.failed
    reset = spans.span_of(observed(status=0, error=TRANSPORT))
    assert reset.attributes["error.type"] == "transport"
    assert "http.response.status_code" not in reset.attributes
    rpc = spans.span_of(observed(rpc_method="tools/list", rpc_id="null", error=JSONRPC))
    assert rpc.name == "tools/list" and rpc.attributes["error.type"] == "jsonrpc"
    assert "jsonrpc.request.id" not in rpc.attributes  # a null id is left out
    assert "gen_ai.operation.name" not in rpc.attributes
    assert (
        spans.span_of(observed(rpc_method="ping", rpc_id="7")).attributes["jsonrpc.request.id"]
        == "7"
    )
    both = spans.span_of(observed(injected=True, faults=(SLOW, Fault("reset", "r1"))))
    assert both.attributes["sandboxd.fault.kind"] == "latency,reset"
    assert [e.attributes["sandboxd.fault.id"] for e in both.events] == ["slow-describe", "r1"]


def test_counters_add_up_and_forget_a_sandbox() -> None:
    s = PrometheusSink()  # (the counters behind the router's Prometheus metrics)
    s.add(observed(status=200, faults=(SLOW,), injected=True))
    s.add(observed(status=500, error=HTTP_5XX))
    s.add(observed(sandbox="", routing_key="", route=BASELINE, rpc_method="tools/call",
                   tool="get_logs"))  # fmt: skip
    s.add(observed(sandbox="pr-2", routing_key="k2", duration=2.0))
    c = s.counters
    assert c.requests == {
        ("pr-1", "cluster-mcp", 200): 1,
        ("pr-1", "cluster-mcp", 500): 1,
        ("", "cluster-mcp", 200): 1,
        ("pr-2", "cluster-mcp", 200): 1,
    }
    assert c.faults == {("pr-1", "cluster-mcp", "slow-describe"): 1}
    assert c.tools == {("", "cluster-mcp", "get_logs", ""): 1}
    s.add(observed(sandbox="", routing_key="", service="-", status=404))
    assert c.requests[("", "-", 404)] == 1  # counted, though in no bucket
    assert c.durations[("pr-2", "cluster-mcp")].counts[12] == 0
    assert c.durations[("pr-2", "cluster-mcp")].counts[13] == 1  # 2000 ms <= 2500
    assert c.durations[("pr-1", "cluster-mcp")].sum == pytest.approx(0.002)
    c.forget("pr-1")
    assert all(key[0] != "pr-1" for key in (*c.requests, *c.faults, *c.durations))
    assert ("pr-2", "cluster-mcp", 200) in c.requests and c.tools


def test_a_bucket_keeps_at_most_256_tools_the_rest_as_other() -> None:
    s = sink()
    for n in range(300):
        s.add(observed(rpc_method="tools/call", tool=f"t{n}"))
    (bucket,) = [b for b in s.outbox()[0] if b["sandbox"] == "pr-1"]
    assert len(bucket["tools"]) == 256
    assert bucket["tools"]["(other)"]["calls"] == 300 - 255
    assert sum(t["calls"] for t in bucket["tools"].values()) == 300


def test_a_posts_body_is_byte_for_byte_orjson_of_its_records_and_buckets() -> None:
    """The body is written as text, not as dicts (`request_wire.RecordText`): whatever a client
    put in the names, ids and traceparent, it is the JSON of what `outbox` gives."""
    s = sink()
    rng = Random(3)
    odd = ['q"uote', "back\\slash", "tab\there", "é-ü", "(other)", "?", "", "\x01"]
    for n in range(3000):
        mcp = n % 3 == 0
        s.add(
            observed(
                end=T0 + rng.random() * 9,
                duration=rng.choice([rng.random() / 100, rng.random() * 30, 0.0, 0.0005]),
                service=rng.choice(["cluster-mcp", *odd[:4]]),
                sandbox=rng.choice(["pr-1", *odd[:6]]),
                routing_key=rng.choice(["k3y", 'k"y']),
                route=rng.choice([SANDBOX, BASELINE]),
                method=rng.choice(["GET", "POST", "get", 'M"X']),
                status=rng.choice([200, 404, 502, 0]),
                bytes_in=rng.randrange(1 << 40),
                traceparent=rng.choice([None, f"00-{TRACE}-{PARENT}-01", "junk", 'a"b-c']),
                error=rng.choice([OK, HTTP_5XX, TOOL_ERROR]),
                injected=n % 5 == 0,
                faults=(SLOW, Fault("reset", rng.choice(odd))) if n % 5 == 0 else (),
                injected_at=0.001,
                rpc_method=rng.choice(["tools/call", *odd]) if mcp else None,
                tool=rng.choice([None, "describe_pod", *odd]) if mcp else None,
                rpc_id=rng.choice([None, "7", '"a-7"', "null", '"\\u00e9"', odd[0]])
                if mcp
                else None,
                path=rng.choice(["", "/", "/tools/é", *odd]),
                session=rng.choice([None, "5f3a", *odd]) if mcp else None,
                protocol=rng.choice([None, "2025-06-18", "2026-07-28", *odd]) if mcp else None,
            )
        )
    buckets, records = s.outbox()
    assert len(records) > 1000 and any(r["faults"] for r in records)
    expected = orjson.dumps({"instance": s.instance, "buckets": buckets, "requests": records})
    assert s.body() == expected


def test_records_of_a_thousand_sandboxes_share_their_span_shapes() -> None:
    """`RecordText` keeps per sandbox only its quoted names (issue 13's memory bar: a thousand
    sandboxes' span shapes were 2.3 MB): the sandbox goes between the cached halves of the
    attributes, in `span_of`'s order, and a request without one (baseline) has none."""
    text = RecordText()
    batch = [
        (n, observed(sandbox=f"live-{n % 1000}", routing_key=f"{n % 1000:016x}", service=service))
        for n, service in enumerate(["echo", "api", "cluster-mcp"] * 1000)
    ]
    batch.append((3000, observed(sandbox="", routing_key="", route=BASELINE)))
    body = b"".join(text.texts(batch))
    assert body == b",".join(orjson.dumps(request_wire.wire_of(n, o)) for n, o in batch)
    assert len(text._shapes) == 3 + 1  # one per service, and the baseline one: none per sandbox
    assert len(text._quoted) <= 2 * 1000 + 20  # each sandbox's name and key, and a few others


def test_a_fifo_keeps_what_a_deque_keeps() -> None:
    """`tally.Fifo` (a list and the index of its first record: cheaper than a deque when
    compiled) through appends and drops, long enough to be moved down many times."""
    rng = Random(3)
    fifo, expected = Fifo(), deque[tuple[int, Observed]]()
    for n in range(20_000):
        if expected and rng.random() < 0.5:
            assert fifo.first() == expected[0][0]
            fifo.drop_first()
            expected.popleft()
        else:
            o = observed()
            o.number = n  # (the tally numbers a record as it queues it)
            fifo.append(o)
            expected.append((n, o))
        assert len(fifo) == len(expected)
    assert fifo.values() == list(expected)


def test_a_dropped_bucket_is_used_again_as_new() -> None:
    """The buckets a window drops are reset and reused for the next window's names (not ~6
    objects each made anew, amid a batch's short-lived ones, every 10 s): a reused bucket
    counts exactly as a new one; no more are kept than are live, none once traffic stops."""
    tally = Tally(max_pending=100, per_sandbox=100, plain_per_sandbox=100, rng=Random(1))
    call = {"rpc_method": "tools/call", "rpc_id": "1", "tool": "describe_pod"}
    for n in range(600):  # past the sample cap, every field used
        tally.add(observed(duration=n / 1000, bytes_in=n, **call))
    tally.add(observed(error=HTTP_5XX, status=502, injected=True, faults=(SLOW,), **call))
    later = {"end": T0 + 11, "sandbox": "pr-2", "routing_key": "k4y", "duration": 0.002}
    tally.add(observed(**{**later, "service": "other"}))  # a live bucket of the next window
    old_key, old = next(iter(tally.buckets.items()))
    assert old.json(old_key) == orjson.dumps(old.wire(old_key))  # (its head kept from now on)
    tally.drop_buckets([old_key])
    tally.add(observed(**later))
    key, reused = list(tally.buckets.items())[-1]
    assert reused is old
    assert key == ("pr-2", "k4y", "cluster-mcp", T0 + 10)
    fresh = Tally(max_pending=100, per_sandbox=100, plain_per_sandbox=100, rng=Random(1))
    fresh.add(observed(**later))
    (bucket,) = fresh.buckets.values()
    assert reused.wire(key) == bucket.wire(key)
    assert reused.wire(key)["requests"] == 1
    assert reused.json(key) == bucket.json(key) == orjson.dumps(bucket.wire(key))
    tally.drop_buckets(list(tally.buckets))  # traffic stopped: every window closed
    assert tally._spare == []


def test_names_let_go_of_the_buckets_and_queues_that_went() -> None:
    """A names object (which the ring keeps for long, shared by its requests) carries where
    its requests count now; once that bucket is dropped, or that sandbox's queue is sent and
    gone, it must not keep them alive: at 1,000 sandboxes that was 26 MB of samples."""
    tally = Tally(max_pending=100, per_sandbox=100, plain_per_sandbox=100, rng=Random(1))
    records = [observed(sandbox=f"pr-{n}", duration=n / 1000) for n in range(50)]
    for o in records:
        tally.add(o)
    assert all(o.names.tally is not None for o in records)  # (where each counts now)
    tally.drop_buckets(list(tally.buckets))  # the window sent: every bucket gone
    assert all(o.names.tally is None for o in records)
    later = [observed(sandbox=f"pr-{n}", end=T0 + 11) for n in range(50)]
    for o in later:
        tally.add(o)
    assert len(tally.buckets) == 50 and all(o.names.tally is not None for o in later)
    tally.acknowledged(tally.queued())  # every record sent: every queue gone
    assert not tally.pending
    assert all(o.names.tally is None for o in later)


def test_the_json_texts_kept_for_reuse_take_the_memory_of_their_text() -> None:
    """The texts kept to be written again (names in request records, latency samples in
    buckets) are copied to their size: an orjson bytes object keeps the ~4 KB buffer it wrote
    in, which made the telemetry process 26 MB larger at 1,000 sandboxes."""
    text = RecordText()
    tally = Tally(max_pending=100, per_sandbox=100, plain_per_sandbox=100, rng=Random(1))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(1000):
            text.quoted(f"sandbox-{n}")
        for n in range(2000):  # 2,000 samples of distinct values, in 4 buckets
            tally.add(observed(duration=n / 1_000_000, service=f"s{n % 4}"))
        for key, bucket in tally.buckets.items():
            bucket.json(key)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1_000_000, grown  # (each text kept as orjson made it: over 12 MB)
