"""A test origin that records exactly what reaches it, for the router's tests.

Run: python origin.py PORT NAME. Every request is recorded (method, target, raw headers in
order, body) and `GET /__seen` returns them all as JSON (`DELETE /__seen` forgets them), so a
test can check what an upstream really received — including that a smuggled second request
never arrived. Paths:
  /echo            200 JSON: who answered and what it received
  /sse?n=5&ms=200  text/event-stream, n events `ms` apart, each with its send time
  /chunked?n=3     a chunked body of n parts
  /big?bytes=N     N bytes (Content-Length)
  /upload          reads the whole body, answers its length and SHA-256
  /slow?ms=N       waits N ms before answering
  /cookie          sets a cookie
  /router-cookie   sets the router's preview cookie (which the router must drop) and another
  /close           a body delimited by closing the connection
  /status?code=N   an empty answer with that status
  /drop-next       answers, then closes this connection silently when its next request comes
                   (a server whose keep-alive timeout fires just as a pooled connection is reused)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from urllib.parse import parse_qs, urlsplit

import httptools

SEEN: list[dict[str, object]] = []


class Origin(asyncio.Protocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.connection_requests = 0
        self.drop_next = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.reply(400, b"bad request", close=True)

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers: list[list[str]] = []
        self.body = bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append([name.decode("latin-1"), value.decode("latin-1")])

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_message_complete(self) -> None:
        self.connection_requests += 1
        method = self.parser.get_method().decode()
        self.head_only = method == "HEAD"
        parts = urlsplit(self.url.decode())
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/__seen":
            if method == "DELETE":
                SEEN.clear()
            self.reply(200, json.dumps(SEEN).encode())
            return
        dropped = self.drop_next
        SEEN.append({
            "origin": self.name, "method": method, "target": self.url.decode(),
            "headers": self.headers, "bodyLength": len(self.body),
            "bodySha256": hashlib.sha256(self.body).hexdigest(),
            "connectionRequest": self.connection_requests, "dropped": dropped,
        })  # fmt: skip
        if dropped:
            self.transport.close()  # type: ignore[union-attr]
            return
        if parts.path == "/drop-next":
            self.drop_next = True
        self.task = asyncio.ensure_future(self.answer(method, parts.path, query))

    async def answer(self, method: str, path: str, query: dict[str, str]) -> None:
        if path == "/sse":
            await self.sse(int(query.get("n", "5")), int(query.get("ms", "200")))
        elif path == "/chunked":
            self.write_head(200, [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")])
            for i in range(int(query.get("n", "3"))):
                part = f"part-{i};".encode()
                self.transport.write(b"%x\r\n%b\r\n" % (len(part), part))  # type: ignore[union-attr]
                await asyncio.sleep(0.01)
            self.transport.write(b"0\r\n\r\n")  # type: ignore[union-attr]
        elif path == "/big":
            self.reply(200, b"x" * int(query.get("bytes", "1000000")))
        elif path == "/upload":
            body = {"length": len(self.body), "sha256": hashlib.sha256(self.body).hexdigest()}
            self.reply(200, json.dumps(body).encode())
        elif path == "/slow":
            await asyncio.sleep(int(query.get("ms", "1000")) / 1000)
            self.reply(200, b"slow")
        elif path == "/cookie":
            self.reply(200, b"cookie", extra=[("Set-Cookie", f"session={self.name}; Path=/")])
        elif path == "/router-cookie":
            cookies = [
                ("Set-Cookie", f"sandboxd-preview=from-{self.name}; Path=/"),
                ("Set-Cookie", f"session={self.name}; Path=/"),
                ("set-cookie", " __Host-sandboxd-preview=x; Path=/; Secure"),
            ]
            self.reply(200, b"cookie", extra=cookies)
        elif path == "/close":
            self.write_head(200, [("Content-Type", "text/plain"), ("Connection", "close")])
            self.transport.write(b"until-close")  # type: ignore[union-attr]
            self.transport.close()  # type: ignore[union-attr]
        elif path == "/status":
            self.reply(int(query.get("code", "200")), b"")
        else:
            seen = SEEN[-1] if SEEN else {}
            self.reply(200, json.dumps({"origin": self.name, "received": seen}).encode(),
                       extra=[("X-Repeated", "one"), ("X-Repeated", "two")])  # fmt: skip

    async def sse(self, n: int, ms: int) -> None:
        self.write_head(200, [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
                              ("Transfer-Encoding", "chunked")])  # fmt: skip
        for i in range(n):
            event = f"id: {i}\ndata: {json.dumps({'i': i, 'sent': time.time()})}\n\n".encode()
            self.transport.write(b"%x\r\n%b\r\n" % (len(event), event))  # type: ignore[union-attr]
            await asyncio.sleep(ms / 1000)
        self.transport.write(b"0\r\n\r\n")  # type: ignore[union-attr]

    def write_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in headers), "", ""]
        self.transport.write("\r\n".join(lines).encode())  # type: ignore[union-attr]

    def reply(self, status: int, body: bytes, *, close: bool = False,
              extra: list[tuple[str, str]] | None = None) -> None:  # fmt: skip
        headers = [("Content-Length", str(len(body))), *(extra or [])]
        if close:
            headers.append(("Connection", "close"))
        self.write_head(status, headers)
        if not self.head_only:
            self.transport.write(body)  # type: ignore[union-attr]
        if close:
            self.transport.close()  # type: ignore[union-attr]


async def main() -> None:
    port, name = int(sys.argv[1]), sys.argv[2]
    server = await asyncio.get_running_loop().create_server(lambda: Origin(name), "127.0.0.1", port)
    print(f"origin {name} on {port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
