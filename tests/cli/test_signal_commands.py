"""`sandbox metrics`, `requests` and `traces` against a real sandboxd, whose signals are posted
the way a router's telemetry process posts them (`POST /v1/router-signals`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import Invoke
from tests.support.server import Sandboxd

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def bucket(
    sandbox: str, key: str, start: int, latencies: list[float], **more: Any
) -> dict[str, Any]:
    return {"sandbox": sandbox, "routingKey": key, "service": "echo", "start": start,
            "width": 10, "requests": len(latencies), "injected": 0,
            "errors": {"http_5xx": 0, "jsonrpc": 0, "tool_error": 0, "transport": 0},
            "injectedErrors": {"http_5xx": 0, "jsonrpc": 0, "tool_error": 0, "transport": 0},
            "faults": {}, "latencyMs": latencies, "injectedLatencyMs": [],
            "histogram": [0] * 17, "bytesIn": 0, "bytesOut": 0, "tools": {}, **more}  # fmt: skip


def record(sandbox: str, key: str, seq: int, status: int, **more: Any) -> dict[str, Any]:
    return {"seq": seq, "sandbox": sandbox, "routingKey": key, "service": "echo",
            "route": "baseline", "start": time.time() - 5, "durationMs": 1.5, "method": "GET",
            "status": status, "bytesIn": 0, "bytesOut": 10,
            "error": "http_5xx" if status >= 500 else None, "injected": status >= 500,
            "faults": [{"kind": "http_error", "id": "boom"}] if status >= 500 else [],
            "traceId": TRACE, "spanId": f"{seq:016x}", "parentSpanId": "00f067aa0ba902b7",
            "rpcMethod": None, "tool": None, "rpcId": None, "name": "GET",
            "attributes": {"http.request.method": "GET", "http.response.status_code": status},
            "events": [], **more}  # fmt: skip


@pytest.fixture(scope="module")
def seeded(server: Sandboxd) -> Iterator[str]:
    """Sandbox `sig`: 40 requests twice as slow as the baseline's 40; two request records."""
    with server.client() as c:
        key = c.post("/v1/sandboxes", json={"name": "sig"}).json()["routingKey"]
        start = int(time.time()) // 10 * 10 - 10
        slow = [2.0 + i / 100 for i in range(40)]
        fast = [1.0 + i / 100 for i in range(40)]
        body = {"instance": "cli-test-0000001",
                "buckets": [bucket("sig", key, start, slow), bucket("", "", start, fast)],
                "requests": [record("sig", key, 1, 200), record("sig", key, 2, 503)]}  # fmt: skip
        answer = c.post("/v1/router-signals", json=body)
        assert answer.status_code == 200, answer.text
        yield key


def test_metrics_table_shows_both_sides(sandbox: Invoke, seeded: str) -> None:
    result = sandbox("metrics", "sig")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split()[:4] == ["echo", "sandbox", "40", "0"]
    assert lines[2].split()[:3] == ["baseline", "40", "0"]


def test_compare_exits_1_on_a_regression(sandbox: Invoke, seeded: str) -> None:
    result = sandbox("metrics", "sig", "--compare")
    assert result.exit_code == 1
    latency = next(line for line in result.output.splitlines() if " latency " in line)
    assert latency.split()[:3] == ["echo", "latency", "regressed"]
    assert "overall: regressed" in result.output
    assert "sandbox sig regressed against the baseline: echo latency" in result.stderr


def test_compare_without_regression_exits_0(sandbox: Invoke, seeded: str) -> None:
    result = sandbox("metrics", "sig", "--compare", "--effect", "5")  # twice as slow < 6x
    assert result.exit_code == 0, result.output
    assert "overall: regressed" not in result.output


def test_metrics_json_is_the_api_object(sandbox: Invoke, seeded: str) -> None:
    result = sandbox("metrics", "sig", "--window", "1m", "-o", "json")
    body = json.loads(result.output)
    assert body["sandbox"] == "sig" and body["window"] == "1m"
    assert body["services"][0]["sandbox"]["requests"] == 40


def test_requests_filter_by_status(sandbox: Invoke, seeded: str) -> None:
    result = sandbox("requests", "sig", "--status", "5xx")
    assert result.exit_code == 0, result.output
    rows = result.output.splitlines()[1:]
    assert len(rows) == 1
    assert rows[0].split()[1:8] == ["echo", "baseline", "GET", "503", "1.5ms", "http_5xx",
                                    "http_error:boom"]  # fmt: skip


def test_traces_show_the_tree(sandbox: Invoke, seeded: str) -> None:
    result = sandbox("traces", "sig", "--trace", TRACE)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"trace {TRACE}")
    assert len(lines) == 3  # two sibling spans whose parent (the client's) is not known
    assert any("503" in line and "error=http_5xx" in line for line in lines[1:])


@pytest.mark.parametrize("command", ["metrics", "requests", "traces"])
def test_an_unknown_sandbox_is_exit_6(sandbox: Invoke, command: str) -> None:
    result = sandbox(command, "nope")
    assert result.exit_code == 6
    assert result.stderr.startswith("sandbox: ")


def test_a_bad_window_is_exit_2(sandbox: Invoke, seeded: str) -> None:
    result = sandbox("metrics", "sig", "--window", "forever")
    assert result.exit_code == 2
    assert "window" in result.stderr


def readme_harness() -> str:
    """The README's Python harness example ("Fail a CI job on a regression"), as written."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("**Fail a CI job on a regression**") :]
    return section[
        section.index("```python\n") + 10 : section.index("```\n", section.index("```python"))
    ]


def test_the_readme_harness_fails_on_a_regression(server: Sandboxd, seeded: str) -> None:
    env = {**os.environ, "SANDBOXD_URL": server.url, "SANDBOXD_TOKEN": server.token,
           "SANDBOX": "sig"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", readme_harness()], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "regressed: echo latency" in done.stdout
    assert "echo 503 http_5xx" in done.stdout  # the failed request, with its trace
