"""How `sandbox metrics`, `requests` and `traces` render the API's objects (pure views)."""

from __future__ import annotations

from typing import Any

from sandboxd_cli.signal_views import (
    MAX_DEPTH,
    compare_table,
    metrics_table,
    ms,
    regressions,
    requests_table,
    traces_text,
)


def figures(requests: int, p50: float, **more: Any) -> dict[str, Any]:
    return {"requests": requests, "errors": 1, "errorRate": 1 / requests, "p50Ms": p50,
            "p95Ms": p50 * 2, "p99Ms": p50 * 3, "faultsInjected": 0, **more}  # fmt: skip


METRICS = {
    "sandbox": "pr-1",
    "window": "5m",
    "excludeInjected": True,
    "services": [
        {
            "service": "cluster-mcp",
            "sandbox": figures(
                40,
                201.0,
                tools=[{"tool": "describe_pod", "calls": 20, "jsonrpcErrors": 0, "toolErrors": 1}],
            ),
            "baseline": figures(400, 1.1),
            "compare": {
                "verdict": "regressed",
                "errorRate": {
                    "verdict": "pass",
                    "sandbox": 0.025,
                    "baseline": 0.0025,
                    "pValue": 0.07,
                },
                "latency": {
                    "verdict": "regressed",
                    "sandboxMedianMs": 201.0,
                    "baselineMedianMs": 1.1,
                    "ratio": 182.7,
                    "pValue": 1e-12,
                },
                "p99": {"verdict": "inconclusive", "reason": "fewer than 100 samples on a side"},
            },
        }
    ],
    "compare": {
        "overall": "regressed",
        "alpha": 0.05,
        "effect": 0.2,
        "minSamples": 20,
        "regressed": [{"service": "cluster-mcp", "figure": "latency"}],
    },
}


def test_metrics_show_each_side_of_each_service_and_the_tools() -> None:
    lines = metrics_table(METRICS).splitlines()
    assert lines[0].split() == ["SERVICE", "SIDE", "REQUESTS", "ERRORS", "ERROR", "RATE", "P50",
                                "P95", "P99", "INJECTED"]  # fmt: skip
    assert lines[1].split() == ["cluster-mcp", "sandbox", "40", "1", "2.5%", "201ms", "402ms",
                                "603ms", "0"]  # fmt: skip
    assert lines[2].split() == ["baseline", "400", "1", "0.2%", "1.1ms", "2.2ms", "3.3ms", "0"]
    assert lines[-1].split() == ["cluster-mcp", "describe_pod", "20", "0", "1"]


def test_compare_names_each_verdict_and_the_overall_one() -> None:
    text = compare_table(METRICS)
    assert "latency     regressed      median 201ms vs 1.1ms (x183), p=1e-12" in text
    assert "p99         inconclusive   fewer than 100 samples on a side" in text
    assert "errorRate   pass           2.5% vs 0.2%, p=0.07" in text
    assert text.splitlines()[-1] == "overall: regressed"
    assert regressions(METRICS) == ["cluster-mcp latency"]
    assert regressions({"compare": {"overall": "pass", "regressed": []}}) == []


def test_no_traffic_says_so() -> None:
    assert metrics_table({"sandbox": "a", "window": "1m", "services": []}) == (
        "(no traffic of sandbox a in the last 1m)"
    )


def test_durations_read_at_a_glance() -> None:
    assert [ms(0.4123), ms(12.34), ms(1520), ms(None), ms(True)] == [
        "0.412ms", "12.3ms", "1.52s", "-", "-"
    ]  # fmt: skip


def test_requests_show_status_fault_call_and_trace() -> None:
    item = {"start": "2026-12-05T10:00:00.5Z", "service": "cluster-mcp", "route": "baseline",
            "method": "POST", "status": 0, "durationMs": 3.0, "error": "transport",
            "faults": [{"kind": "reset", "id": "r1"}], "rpcMethod": "tools/call",
            "tool": "describe_pod", "traceId": "4bf92f3577b34da6a3ce929d0e0e4736"}  # fmt: skip
    row = requests_table([item]).splitlines()[1].split()
    assert row == ["2026-12-05T10:00:00Z", "cluster-mcp", "baseline", "POST", "reset", "3ms",
                   "transport", "reset:r1", "tools/call", "describe_pod",
                   "4bf92f3577b34da6a3ce929d0e0e4736"]  # fmt: skip
    assert requests_table([]) == "(no requests)"


def span(span_id: str, *children: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"spanId": span_id, "name": "POST", "service": "logs-mcp", "route": "sandbox",
            "status": 200, "durationMs": 1.0, "attributes": {}, "children": list(children),
            **more}  # fmt: skip


def test_traces_are_trees() -> None:
    faulted = span("c2", status=503, error="http_5xx",
                   attributes={"sandboxd.fault.kind": "http_error", "sandboxd.fault.id": "e"})  # fmt: skip
    trace = {"traceId": "t1", "start": "2026-12-05T10:00:00Z", "durationMs": 5.0,
             "spans": [span("a1", span("b1"), faulted), span("d1")]}  # fmt: skip
    lines = traces_text([trace]).splitlines()
    assert lines[0] == "trace t1  2026-12-05T10:00:00Z  5ms"
    assert lines[1].startswith("├─ POST  logs-mcp  sandbox  200  1ms  span a1")
    assert lines[2].startswith("│  ├─ POST") and lines[2].endswith("span b1")
    assert lines[3] == (
        "│  └─ POST  logs-mcp  sandbox  503  1ms  error=http_5xx  fault=http_error:e  span c2"
    )
    assert lines[4].startswith("└─ POST") and lines[4].endswith("span d1")


def test_a_tree_too_deep_is_cut_and_server_text_is_escaped() -> None:
    deep = span("leaf")
    for i in range(MAX_DEPTH + 5):
        deep = span(f"s{i}", deep)
    hostile = span("x", name="POST\x1b[2J")
    text = traces_text([{"traceId": "t", "spans": [deep, hostile]}])
    assert "too deep to show" in text
    assert len(text.splitlines()) == 1 + MAX_DEPTH + 2 + 1
    assert "\x1b" not in text and "POST\\x1b[2J" in text
