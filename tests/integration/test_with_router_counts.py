"""`unread` and `unrewritten` counted by the real embedded router and shown by the API: a request
body over the MCP body limit that a `tool` fault could not read, and a response over the
rewrite limit that a rewriting fault fired on but let through."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import wait_phase
from tests.support import poll
from tests.support.server import free_port, running_sandboxd

pytestmark = pytest.mark.slow
BIG = 2 << 20  # over the router's MCP body limit and its rewrite limit (1 MiB each)

BASELINE = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BIG = json.dumps({"items": ["x" * 1000] * ITEMS}).encode()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.answer(BIG if self.path == "/big" else b'{"ok": true}')

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.answer(b'{"jsonrpc": "2.0", "id": 1, "result": {"content": []}}')

    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""".replace("ITEMS", str(BIG // 1000))


def catalog(path: Path, script: Path, ports: dict[str, tuple[int, int]]) -> Path:
    services = [
        {
            "name": name,
            "protocol": protocol,
            "routerPort": ports[name][0],
            "baseline": {
                "url": f"http://127.0.0.1:{ports[name][1]}",
                "command": [sys.executable, str(script), str(ports[name][1])],
                "health": "/",
            },
        }
        for name, protocol in (("api", "http"), ("tools", "mcp"))
    ]
    path.write_text(json.dumps({"services": services}))
    return path


def test_unread_and_unrewritten_counts_reach_the_api(tmp_path: Path) -> None:
    script = tmp_path / "baseline.py"
    script.write_text(BASELINE)
    ports = {name: (free_port(), free_port()) for name in ("api", "tools")}
    cat = catalog(tmp_path / "sandboxd.yaml", script, ports)
    faults = [
        {"id": "trim", "service": "api", "kind": "empty_result", "path": "/big"},
        {"id": "down", "service": "tools", "kind": "tool_error", "tool": "x"},
        {"id": "probe", "service": "api", "kind": "http_error", "path": "/probe"},
    ]
    args = ["--with-router", "--start-baseline"]
    with (
        running_sandboxd(tmp_path / "data", catalog=cat, args=args) as server,
        server.client() as c,
    ):
        key = c.post("/v1/sandboxes", json={"name": "pr-9", "faults": faults}).json()["routingKey"]
        wait_phase(c, "pr-9", "Ready")
        baggage = {"baggage": f"sandbox={key}"}
        api = f"http://127.0.0.1:{ports['api'][0]}"
        poll.until(
            lambda: httpx.get(f"{api}/probe", headers=baggage),
            lambda r: r.status_code == 503,
            timeout=20,
            what="the router to apply pr-9's faults",
            ignoring=(httpx.HTTPError,),
        )
        big = httpx.get(f"{api}/big", headers=baggage, timeout=10)
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "x", "arguments": {"pad": "y" * BIG}}}  # fmt: skip
        mcp_headers = {**baggage, "Accept": "application/json, text/event-stream"}
        unread = httpx.post(
            f"http://127.0.0.1:{ports['tools'][0]}/mcp", json=call, headers=mcp_headers, timeout=10
        )

        assert big.status_code == 200 and len(big.content) > BIG  # through, unrewritten
        assert "sandboxd-fault" not in big.headers
        assert unread.status_code == 200 and "sandboxd-fault" not in unread.headers

        def counts() -> dict[str, tuple[int, int, int, int]]:
            shown = c.get("/v1/sandboxes/pr-9").json()["faults"]
            return {f["id"]: (f["matched"], f["injected"], f["unread"], f["unrewritten"])
                    for f in shown if f["id"] != "probe"}  # fmt: skip

        want = {"trim": (1, 1, 0, 1), "down": (0, 0, 1, 0)}
        assert poll.until(counts, lambda n: n == want, timeout=10, what="counts") == want
