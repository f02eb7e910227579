"""Faults: which of a sandbox's faults a request triggers (issue 12). Pure: no I/O.

The route table's fault dicts (wire form: camelCase, absent keys unset) are compiled once per
table build into `Fault`s, grouped per service (`ServiceFaults`), and hung on the `Decision`s
made for that sandbox's key — so a request with no fault pays one attribute test.

Matching: `service` (the group); http: `path` (a glob on the path, query excluded) and
`httpMethod`; mcp: `tool` (a glob on `tools/call`'s `params.name`) and `method` (a glob on the
JSON-RPC method; `tools/call` when `tool` is given, else any). A fault that needs the JSON-RPC
method (a `tool`/`method` filter, or a JSON-RPC kind, which needs the request's `id`) never
matches a request whose body was not read (over the MCP body limit): that is counted in
`Fault.unread`.

Schedule, per fault, over the requests it matches: `after` skips the first N; of the rest,
`nth` fires every Nth (the Nth, 2Nth, …); `probability` is drawn (from `random.Random(seed)`
when `seed` is given: a reproducible run); `times` stops it after N injections.

Composition, in list order: every firing `latency` adds up; then the first firing fault of any
other kind applies, and the faults after it are not consulted (not even counted as matched).
"""

from __future__ import annotations

import fnmatch
import json
import random
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

LATENCY: Final = "latency"
ANSWERS: Final = frozenset(
    {"http_error", "rate_limit", "timeout", "reset", "jsonrpc_error", "tool_error"}
)
"""Kinds the router answers itself: the upstream is never called."""
JSONRPC_KINDS: Final = frozenset({"jsonrpc_error", "tool_error"})
REWRITES: Final = frozenset(
    {"slow_stream", "malformed", "empty_result", "drop_fields", "inject", "hide_tool"}
)
"""Kinds that rewrite the upstream's response: not applied yet (a later part of issue 12). They
are compiled and kept (their counters too) but never consulted: the request passes untouched.
The seam for them is `ServiceFaults.choose`, which would return them in `Verdict.rewrite`."""


class Fault:
    """One compiled fault, with its schedule state and counters (kept across table swaps that
    keep the same id for the same sandbox)."""

    __slots__ = (
        "after", "code", "http_method", "id", "injected", "kind", "latency_ms", "matched",
        "message", "method", "needs_body", "nth", "path", "probability", "raw", "retry_after",
        "rng", "sandbox", "service", "status", "times", "tool", "unread",
    )  # fmt: skip

    def __init__(self, sandbox: str, raw: Mapping[str, Any]) -> None:
        self.raw = dict(raw)
        self.sandbox = sandbox
        self.id = str(raw["id"])
        self.service = str(raw["service"])
        self.kind = str(raw["kind"])
        self.path = _glob(raw.get("path"))
        method = raw.get("httpMethod")
        self.http_method = str(method).upper().encode() if method else None
        self.tool = _glob(raw.get("tool"))
        self.method = _glob(raw.get("method") or ("tools/call" if raw.get("tool") else None))
        self.needs_body = (
            self.tool is not None or self.method is not None or self.kind in JSONRPC_KINDS
        )
        self.latency_ms = _int(raw.get("latencyMs"))
        self.status = _int(raw.get("status"))
        self.code = _int(raw.get("code"))
        self.message = str(raw.get("message") or "")
        self.retry_after = _int(raw.get("retryAfter"))
        probability = raw.get("probability")
        self.probability = 1.0 if probability is None else float(probability)
        seed = raw.get("seed")
        # a schedule, not a secret: reproducible from `seed`
        self.rng = random.Random(seed) if seed is not None else random.Random()  # noqa: S311
        self.nth = _int(raw.get("nth"))
        self.after = _int(raw.get("after")) or 0
        self.times = _int(raw.get("times"))
        self.matched = 0
        self.injected = 0
        self.unread = 0

    def header(self) -> bytes:
        """The `sandboxd-fault` header's value."""
        return f"{self.kind}; id={self.id}".encode()

    def matches(self, request: Request) -> bool:
        if self.http_method is not None and request.http_method != self.http_method:
            return False
        if self.path is not None and not self.path.fullmatch(request.path):
            return False
        if self.needs_body:
            if not request.read:
                self.unread += 1
                return False
            if request.rpc_method is None:
                return False  # not one JSON-RPC message (a GET, a batch, not JSON)
            if self.kind in JSONRPC_KINDS and request.rpc_id is None:
                return False  # a notification or a response: there is no request to answer
            if self.method is not None and not self.method.fullmatch(request.rpc_method or ""):
                return False
            if self.tool is not None and not self.tool.fullmatch(request.tool or ""):
                return False
        return True

    def fires(self) -> bool:
        """Count a matching request and decide (the schedule) whether this one is injected."""
        self.matched += 1
        rank = self.matched - self.after
        if rank <= 0:
            return False
        if self.times is not None and self.injected >= self.times:
            return False
        if self.nth and rank % self.nth:
            return False
        if self.probability < 1.0 and self.rng.random() >= self.probability:
            return False
        self.injected += 1
        return True


class Request:
    """What faults match on: the head's method and path, and (MCP, when read) the body's."""

    __slots__ = ("http_method", "path", "read", "rpc_id", "rpc_method", "tool")

    def __init__(self, http_method: bytes, target: bytes, message: Any = None, *, read: bool):
        self.http_method = http_method
        self.path = target.split(b"?", 1)[0].decode("latin-1")
        self.read = read
        self.rpc_method: str | None = None
        self.rpc_id: Any = None
        self.tool: str | None = None
        if isinstance(message, dict):  # (a batch carries no one method: it matches no filter)
            method = message.get("method")
            self.rpc_method = method if isinstance(method, str) else None
            self.rpc_id = message.get("id")
            params = message.get("params")
            name = params.get("name") if isinstance(params, dict) else None
            self.tool = name if isinstance(name, str) else None


def request_of(http_method: bytes, target: bytes, body: bytes | None) -> Request:
    """A request as faults see it; `body` None: not read (over the limit)."""
    if body is None:
        return Request(http_method, target, read=False)
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):  # not JSON: it matches no JSON-RPC filter
        message = None
    return Request(http_method, target, message, read=True)


class Verdict:
    """What a request gets: `latency_ms` added (the sum of the firing latency faults), then
    `answer` (a fault the router answers itself) or, when None, the upstream's response."""

    __slots__ = ("answer", "delayed", "latency_ms", "request")

    def __init__(self, delayed: list[Fault], answer: Fault | None, request: Request) -> None:
        self.delayed = delayed
        self.answer = answer
        self.latency_ms = sum(f.latency_ms or 0 for f in delayed)
        self.request = request

    def applied(self) -> list[Fault]:
        return [*self.delayed, *([self.answer] if self.answer is not None else [])]

    def names(self) -> str:
        """The applied faults, for the access log: `kind; id=…` joined by commas."""
        return ", ".join(f"{f.kind}; id={f.id}" for f in self.applied())

    def headers(self) -> bytes:
        """`sandboxd-fault` header lines (CRLF-terminated), one per applied fault."""
        return b"".join(b"sandboxd-fault: " + f.header() + b"\r\n" for f in self.applied())


class ServiceFaults:
    """One sandbox's faults on one service, in list order."""

    __slots__ = ("faults", "needs_body", "sandbox", "service")

    def __init__(self, sandbox: str, service: str, faults: list[Fault]) -> None:
        self.sandbox = sandbox
        self.service = service
        self.faults = faults
        self.needs_body = any(f.needs_body for f in faults)

    def choose(self, request: Request) -> Verdict | None:
        """The verdict for `request`, or None when no fault fires (then it goes on untouched)."""
        delayed: list[Fault] = []
        answer: Fault | None = None
        for fault in self.faults:
            kind = fault.kind
            if kind in REWRITES or not fault.matches(request):
                continue  # (rewriting kinds: a later part; see REWRITES)
            if fault.fires():
                if kind == LATENCY:
                    delayed.append(fault)
                else:
                    answer = fault
                    break
        if not delayed and answer is None:
            return None
        return Verdict(delayed, answer, request)


class FaultBook:
    """Every compiled fault of the current table, by (sandbox, id): kept across table builds so
    that a fault whose id stays keeps its counters (and, when unchanged, its schedule)."""

    def __init__(self) -> None:
        self._faults: dict[tuple[str, str], Fault] = {}
        self._pending: dict[tuple[str, str], Fault] = {}  # the table being replaced
        self._next: dict[tuple[str, str], Fault] = {}  # the table being compiled

    def compile(self, sandbox: str, raws: Iterable[Mapping[str, Any]]) -> dict[str, ServiceFaults]:
        """A sandbox's faults by service; an unchanged fault is the very same object."""
        by_service: dict[str, list[Fault]] = {}
        for raw in raws:
            fault = self._compiled(sandbox, raw)
            by_service.setdefault(fault.service, []).append(fault)
        return {s: ServiceFaults(sandbox, s, fs) for s, fs in by_service.items()}

    def _compiled(self, sandbox: str, raw: Mapping[str, Any]) -> Fault:
        fault = Fault(sandbox, raw)
        old = self._pending.get((sandbox, fault.id))
        if old is not None:
            if old.raw == fault.raw:
                fault = old
            else:
                fault.matched, fault.injected, fault.unread = old.matched, old.injected, old.unread
        self._next[(sandbox, fault.id)] = fault
        return fault

    def begin(self) -> None:
        """Start compiling a new table (its faults replace the current ones at `commit`)."""
        self._pending = self._faults
        self._next = {}

    def commit(self) -> None:
        self._faults, self._next = self._next, {}
        self._pending = {}

    def snapshot(self) -> list[tuple[str, str, int, int]]:
        """(sandbox, fault id, matched, injected) of every fault in the current table."""
        return [(s, i, f.matched, f.injected) for (s, i), f in self._faults.items()]


def _glob(pattern: object) -> re.Pattern[str] | None:
    return re.compile(fnmatch.translate(str(pattern))) if pattern else None


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float | str) else None
