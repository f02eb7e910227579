"""A tiny fork for tests: serves its own environment as JSON on $PORT.

Options (argv): `--delay S` waits S seconds before listening; `--ignore-term` ignores SIGTERM,
so that stopping it takes the grace period and then SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"env": dict(os.environ), "argv": sys.argv, "pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print("request", format % args, flush=True)


def main() -> None:
    args = sys.argv[1:]
    if "--ignore-term" in args:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "--delay" in args:
        time.sleep(float(args[args.index("--delay") + 1]))
    print(f"envserver listening on {os.environ['PORT']}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()


if __name__ == "__main__":
    main()
