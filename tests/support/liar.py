"""A fork that rewrites its own markers: `liar.py NAME=VALUE ...` execs itself (same pid) with
those variables changed, then serves its environment as JSON on the port sandboxd gave it, as
envserver.py does. What sandboxd reads from /proc after a restart is then the lie."""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"env": dict(os.environ), "pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    if "LIAR_PORT" not in os.environ:
        env = {**os.environ, "LIAR_PORT": os.environ["PORT"]}
        env |= dict(pair.split("=", 1) for pair in sys.argv[1:])
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    port = int(os.environ["LIAR_PORT"])
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
