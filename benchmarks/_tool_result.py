"""The MCP exchange of the fault benchmark: a `tools/call` and its 4 KiB tool result, and the
nginx origin that serves it (and the 1 KiB answer of plain HTTP) as fast as nginx can."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import _nginx

TOOL = "search_orders"
RPC_ID = 7
DROPPED = ["items.customer.email", "items.internal_note", "cursor"]
"""The `drop_fields` of the benchmark: a nested field in every item, a field in every item,
and a top-level one."""


def data() -> dict[str, object]:
    """About 4 KiB of JSON: what the tool returns, structured."""
    items = [
        {
            "id": f"ord-{i:05d}",
            "status": ("shipped", "pending", "refunded")[i % 3],
            "total": {"amount": 1999 + 37 * i, "currency": "EUR"},
            "customer": {"id": f"cus-{i * 7:05d}", "email": f"buyer{i}@example.com"},
            "internal_note": "checked by the warehouse",
            "lines": i % 4 + 1,
        }
        for i in range(19)
    ]
    return {"items": items, "count": len(items), "cursor": "b3JkLTAwMDE2"}


def body() -> bytes:
    """The JSON-RPC response: the data as `structuredContent` and as a text content item."""
    structured = data()
    result = {
        "content": [{"type": "text", "text": json.dumps(structured, separators=(",", ":"))}],
        "structuredContent": structured,
        "isError": False,
    }
    return json.dumps({"jsonrpc": "2.0", "id": RPC_ID, "result": result}).encode()


def request(port: int, baggage: str) -> bytes:
    """The `tools/call`, as an MCP client of the Streamable HTTP transport sends it."""
    call = {
        "jsonrpc": "2.0",
        "id": RPC_ID,
        "method": "tools/call",
        "params": {"name": TOOL, "arguments": {"status": "shipped"}},
    }
    payload = json.dumps(call).encode()
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nbaggage: {baggage}\r\n"
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def origin_conf(run_dir: Path, *, web_port: int, mcp_port: int) -> str:
    """`web`: 200 with 1 KiB to anything. `mcp`: the tool result, to any POST /mcp.

    nginx cannot `return` a 9 KiB literal (a config token is at most 4 KiB) and answers a POST
    to a static file with 405, so the POST is turned into an internal GET of the file: the
    client still gets 200 with the file and its Content-Length."""
    (run_dir / "www").mkdir(parents=True, exist_ok=True)
    (run_dir / "www" / "mcp").write_bytes(body())
    return (
        _nginx.head(run_dir)
        + f"""
  server {{
    listen 127.0.0.1:{web_port} backlog=4096;
    location / {{ return 200 "{_nginx.BODY}"; }}
  }}
  server {{
    listen 127.0.0.1:{mcp_port} backlog=4096;
    root {run_dir}/www;
    location = /mcp {{ types {{ }} default_type application/json; error_page 405 =200 $uri; }}
  }}
}}
"""
    )
