"""A tiny HTTP service for the quickstart: says which version and which sandbox answered.

GET / → {"service": "greeter", "version": $VERSION, "greeting": $GREETING, "sandbox": ...}
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Greeter(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(
            {
                "service": "greeter",
                "version": os.environ.get("VERSION", "v1"),
                "greeting": os.environ.get("GREETING", "hello"),
                "sandbox": os.environ.get("SANDBOXD_SANDBOX") or "baseline",
                "baggage": self.headers.get("baggage"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.address_string()} {format % args}", flush=True)


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    print(f"greeter {os.environ.get('VERSION', 'v1')} listening on 127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Greeter).serve_forever()
