"""A fake GitHub: our own narrow HTTP server on loopback, serving only the REST endpoints
sandboxd's CLI uses, with GitHub's payload shapes and status codes, recording what it receives.

- `GET/POST /repos/{o}/{r}/issues/{n}/comments`, `PATCH/DELETE /repos/{o}/{r}/issues/comments/{id}`;
  lists are paged as GitHub pages them (`per_page`, default 30, at most 100; `page`; a `Link`
  header with `rel="next"` and `rel="last"` while more remain, none on a single page).
- `GET/POST /repos/{o}/{r}/deployments` (`?environment=`), `POST …/deployments/{id}/statuses`.
- `refuse(...)` makes the next calls matching a method and path fail as GitHub fails them (a
  502, a secondary rate limit with `Retry-After`, a 403 naming the missing permission).
- `hold(...)` keeps the next calls matching a method and path waiting until that many have
  arrived, then answers them all: two runs that race see the same state.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.loopback import serving

TOKEN = "ghs_fake-job-token"
_COMMENTS = re.compile(r"^/repos/([^/]+/[^/]+)/issues/(\d+)/comments$")
_COMMENT = re.compile(r"^/repos/([^/]+/[^/]+)/issues/comments/(\d+)$")
_DEPLOYMENTS = re.compile(r"^/repos/([^/]+/[^/]+)/deployments$")
_STATUSES = re.compile(r"^/repos/([^/]+/[^/]+)/deployments/(\d+)/statuses$")


@dataclass
class Refusal:
    method: str
    path: str  # a regular expression over the path
    status: int
    headers: dict[str, str]
    message: str
    times: int


@dataclass
class FakeGitHub:
    port: int = 0
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    deployments: dict[int, dict[str, Any]] = field(default_factory=dict)
    statuses: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    seen: list[tuple[str, str, Any]] = field(default_factory=list)
    """(method, path with query, JSON body) of every call, in order."""
    refusals: list[Refusal] = field(default_factory=list)
    holds: list[tuple[str, str, threading.Barrier]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: iter(range(1000, 10**9)))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def refuse(self, method: str, path: str, status: int, *, times: int = 1,
               headers: dict[str, str] | None = None, message: str = "refused") -> None:  # fmt: skip
        self.refusals.append(Refusal(method, path, status, headers or {}, message, times))

    def hold(self, method: str, path: str, *, parties: int) -> None:
        self.holds.append((method, path, threading.Barrier(parties, timeout=60)))

    def add_comment(self, number: int, body: str, *, login: str = "someone") -> dict[str, Any]:
        with self._lock:
            return self._comment(number, body, login)

    def pr_comments(self, number: int) -> list[dict[str, Any]]:
        return [c for c in self.comments.values() if c["_pr"] == number]

    def _comment(self, number: int, body: str, login: str) -> dict[str, Any]:
        cid = next(self._ids)
        comment = {"id": cid, "body": body, "user": {"login": login, "type": "Bot"},
                   "created_at": f"2026-12-06T00:00:{len(self.comments) % 60:02d}Z",
                   "html_url": f"https://github.test/pr/{number}#issuecomment-{cid}", "_pr": number}  # fmt: skip
        self.comments[cid] = comment
        return comment

    # the server ---------------------------------------------------------------------------
    def answer(
        self, method: str, target: str, body: Any, auth: str
    ) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(target)
        path, query = parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.seen.append((method, target, body))
        if auth != f"Bearer {TOKEN}":
            return 401, {"message": "Bad credentials"}, {}
        for held_method, held_path, barrier in list(self.holds):
            if held_method == method and re.search(held_path, path):
                if barrier.wait() == 0:  # (one of the parties retires the hold)
                    self.holds.remove((held_method, held_path, barrier))
                break
        for refusal in self.refusals:
            if refusal.times > 0 and refusal.method == method and re.search(refusal.path, path):
                refusal.times -= 1
                return refusal.status, {"message": refusal.message}, refusal.headers
        with self._lock:
            return self._route(method, path, query, body)

    def _route(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if m := _COMMENTS.match(path):
            number = int(m.group(2))
            if method == "GET":
                return self._page(path, query, self.pr_comments(number))
            if method == "POST" and isinstance(body, dict) and isinstance(body.get("body"), str):
                if len(body["body"]) > 65536:
                    return 422, {"message": "Validation Failed", "errors": [{"field": "body"}]}, {}
                return 201, _public(self._comment(number, body["body"], "github-actions[bot]")), {}
        if m := _COMMENT.match(path):
            comment = self.comments.get(int(m.group(2)))
            if comment is None:
                return 404, {"message": "Not Found"}, {}
            if method == "PATCH" and isinstance(body, dict) and isinstance(body.get("body"), str):
                comment["body"] = body["body"]
                return 200, _public(comment), {}
            if method == "DELETE":
                del self.comments[comment["id"]]
                return 204, None, {}
        if _DEPLOYMENTS.match(path):
            if method == "POST" and isinstance(body, dict) and body.get("ref"):
                did = next(self._ids)
                self.deployments[did] = {"id": did, **body}
                self.statuses[did] = []
                return 201, self.deployments[did], {}
            if method == "GET":
                wanted = query.get("environment")
                found = [d for d in self.deployments.values()
                         if wanted is None or d.get("environment") == wanted]  # fmt: skip
                return self._page(path, query, sorted(found, key=lambda d: -d["id"]))
        if m := _STATUSES.match(path):
            did = int(m.group(2))
            if did not in self.deployments:
                return 404, {"message": "Not Found"}, {}
            if method == "POST" and isinstance(body, dict) and body.get("state"):
                self.statuses[did].append(body)
                return 201, {"id": next(self._ids), **body}, {}
        return 404, {"message": "Not Found"}, {}

    def _page(
        self, path: str, query: dict[str, str], items: list[dict[str, Any]]
    ) -> tuple[int, Any, dict[str, str]]:
        per_page = min(int(query.get("per_page", "30")), 100)
        page = int(query.get("page", "1"))
        last = max(1, -(-len(items) // per_page))
        shown = items[(page - 1) * per_page : page * per_page]
        headers = {}
        if last > 1:
            rest = {k: v for k, v in query.items() if k != "page"}

            def link(n: int) -> str:
                q = "&".join(f"{k}={v}" for k, v in {**rest, "page": n}.items())
                return f"<{self.url}{path}?{q}>"

            links = (
                [f'{link(page + 1)}; rel="next"', f'{link(last)}; rel="last"']
                if page < last
                else []
            )
            headers["Link"] = ", ".join([*links, f'{link(1)}; rel="first"'])
        return 200, [_public(i) for i in shown], headers


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if not k.startswith("_")}


@contextmanager
def running() -> Iterator[FakeGitHub]:
    fake = FakeGitHub()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            status, answer, headers = fake.answer(
                self.command, self.path, body, self.headers.get("Authorization", "")
            )
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as httpd:
        fake.port = httpd.server_address[1]
        yield fake
