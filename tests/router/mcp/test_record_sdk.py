"""The official MCP SDK client through the router: each `tools/call` leaves a record naming its
JSON-RPC method, tool and id, its route, and the error class of what the client got."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from tests.router.mcp.conftest import KEYS, Topology
from tests.router.mcp.sdk import MODES, connect
from tests.support import access_log, poll


@pytest.mark.parametrize("mode", MODES)
async def test_a_tool_call_is_recorded_as_the_client_saw_it(topology: Topology, mode: str) -> None:
    trace = os.urandom(16).hex()
    headers = {"baggage": f"sandbox={KEYS['pr-1']}",
               "traceparent": f"00-{trace}-00f067aa0ba902b7-01"}  # fmt: skip
    async with connect(topology.url, mode=mode, headers=headers) as (client, _):
        fine = await client.call_tool("whoami", {})
        try:
            missing: Any = await client.call_tool("no_such_tool", {})
        except MCPError as e:
            missing = e
    assert not fine.is_error
    expected = "jsonrpc" if isinstance(missing, MCPError) else "tool_error"
    assert expected == "jsonrpc" or missing.is_error

    calls = poll.until(lambda: tool_calls(topology, trace), lambda c: len(c) >= 2, timeout=10,
                       what="the two tools/call records")  # fmt: skip
    whoami, unknown = calls["whoami"], calls["no_such_tool"]
    assert (whoami["error"], unknown["error"]) == ("", expected)
    for record in (whoami, unknown):
        assert (record["service"], record["sandbox"], record["route"]) == (
            "tools",
            "pr-1",
            "sandbox",
        )
        assert record["routing_key"] == KEYS["pr-1"] and record["status"] == 200
        assert record["method"] == "POST" and record["rpc_id"] is not None
    assert json.loads(whoami["rpc_id"]) != json.loads(unknown["rpc_id"])


def tool_calls(topology: Topology, trace: str) -> dict[str, dict[str, Any]]:
    records = access_log.entries(topology.log_dir / "records.jsonl")
    return {r["tool"]: r for r in records
            if r["rpc_method"] == "tools/call" and trace in (r["traceparent"] or "")}  # fmt: skip
