"""logs-mcp: container logs of the fake cluster, behind one MCP tool.

    PORT=7413 python3 logs_mcp.py

`get_logs(namespace, pod, tail=50)` → `{"namespace", "pod", "container", "lines": [...]}`, the
last `tail` lines of the pod's (previous, for a crashing pod) container run. `orders-api` in
`demo` exits at start-up because `DATABASE_URL` is not set: its logs say so, as a real service's
would, among ordinary start-up noise. Unknown pods are tool errors.
"""

from __future__ import annotations

import argparse
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_serving import port_from_env, serve

LOGS: dict[tuple[str, str], tuple[str, list[str]]] = {
    ("demo", "orders-api-5f6b7c8d9-q4m7z"): (
        "orders-api",
        [
            "2025-06-04T09:41:55.102Z INFO  orders-api 1.14.2 starting (pid 1)",
            "2025-06-04T09:41:55.118Z INFO  loading configuration from environment",
            "2025-06-04T09:41:55.119Z INFO  HTTP_PORT=8080 LOG_LEVEL=info",
            "2025-06-04T09:41:55.121Z WARN  REDIS_URL not set, using redis://redis-0.redis:6379",
            "2025-06-04T09:41:55.122Z ERROR config: required environment variable DATABASE_URL "
            "is not set",
            "2025-06-04T09:41:55.122Z FATAL cannot connect to the orders database without "
            "DATABASE_URL; exiting with status 1",
        ],
    ),
    ("demo", "web-frontend-7d9c8b6f4-x2k9p"): (
        "web",
        [
            "2025-06-02T08:11:05.004Z INFO  web 3.2.0 listening on :3000",
            "2025-06-04T09:40:12.551Z INFO  GET /healthz 200 0.4ms",
            "2025-06-04T09:41:12.553Z INFO  GET /healthz 200 0.3ms",
        ],
    ),
    ("demo", "redis-0"): (
        "redis",
        [
            "1:M 27 May 2025 03:00:13.220 * Ready to accept connections tcp",
            "1:M 04 Jun 2025 09:30:00.001 * 100 changes in 300 seconds. Saving...",
            "1:M 04 Jun 2025 09:30:00.112 * Background saving terminated with success",
        ],
    ),
}


def build_server() -> MCPServer:
    server = MCPServer(name="logs-mcp", version="1.0.0")

    @server.tool()
    def get_logs(namespace: str, pod: str, tail: int = 50) -> dict[str, Any]:
        """The last `tail` log lines of a pod's container (the previous run if it crashed)."""
        entry = LOGS.get((namespace, pod))
        if entry is None:
            raise ToolError(f'pods "{pod}" not found in namespace "{namespace}"')
        container, lines = entry
        kept = lines[-tail:] if tail > 0 else []
        return {"namespace": namespace, "pod": pod, "container": container, "lines": kept}

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None, help="default: $PORT")
    args = parser.parse_args()
    serve(build_server(), port=args.port or port_from_env(), health="logs-mcp")


if __name__ == "__main__":
    main()
