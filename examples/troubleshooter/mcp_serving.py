"""How both fake tool servers listen: the SDK's streamable HTTP app on `/mcp`, plus `/healthz`.

DNS-rebinding protection stays on and accepts exactly this process's own authority
(`127.0.0.1:<port>`, `localhost:<port>`). That is what the router sends: it sets `Host` to the
upstream's authority, so the baseline on 7412 and a fork on a random port both accept it, while
a client that reaches a server under a foreign name gets the SDK's 421.
"""

from __future__ import annotations

import os

import uvicorn
from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

HOST = "127.0.0.1"


def port_from_env() -> int:
    """`$PORT`, as sandboxd gives every baseline and fork."""
    return int(os.environ["PORT"])


def serve(server: MCPServer, *, port: int, health: str) -> None:
    """Run `server` on 127.0.0.1:`port` until SIGTERM; `/healthz` answers `health`."""

    @server.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator]
    async def healthz(_: Request) -> Response:
        return PlainTextResponse(health)

    own = [f"{HOST}:{port}", f"localhost:{port}"]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=own,
        allowed_origins=[f"http://{authority}" for authority in own],
    )
    app = server.streamable_http_app(transport_security=security, host=HOST)
    print(f"{server.name} listening on http://{HOST}:{port}/mcp", flush=True)
    uvicorn.run(app, host=HOST, port=port, log_level="warning")
