"""Faults: which of a sandbox's faults a request triggers (issue 12). Pure: no I/O.

The route table's fault dicts (wire form: camelCase, absent keys unset) are compiled into
`Fault`s, grouped per service (`ServiceFaults`), and hung on the `Decision`s made for that
sandbox's key — so a request with no fault pays one attribute test. A fault whose wire form is
unchanged from the last table is not compiled again: the same object carries on.

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
import functools
import json
import random
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

LATENCY: Final = "latency"
MISSES: Final = 1024  # request targets remembered per method as matching no fault
GLOBS: Final = 4096  # compiled glob patterns kept (shared by every fault using one)
ANSWERS: Final = frozenset(
    {"http_error", "rate_limit", "timeout", "reset", "jsonrpc_error", "tool_error"}
)
"""Kinds the router answers itself: the upstream is never called."""
JSONRPC_KINDS: Final = frozenset({"jsonrpc_error", "tool_error"})
REWRITES: Final = frozenset(
    {"slow_stream", "malformed", "empty_result", "drop_fields", "inject", "hide_tool"}
)
"""Kinds that rewrite the upstream's response (`sandboxd_router.rewrite`): the upstream is
called, and its response is buffered to be rewritten."""
HIDE_TOOL: Final = "hide_tool"


class Fault:
    """One compiled fault, with its schedule state and counters (kept across table swaps that
    keep the same id for the same sandbox)."""

    __slots__ = (
        "after", "chunk_delay_ms", "code", "fields", "hidden", "http_method", "id", "injected",
        "key", "kind", "latency_ms", "matched", "message", "method", "needs_body", "nth", "path",
        "prefix", "probability", "raw", "retry_after", "rewrites", "rng", "sandbox", "service",
        "status", "text", "times", "tool", "unread", "unrewritten",
    )  # fmt: skip

    def __init__(self, sandbox: str, raw: Mapping[str, Any]) -> None:
        self.raw = raw
        """The wire form (as parsed, not copied), to tell an unchanged fault in the next table
        by equality."""
        self.sandbox = sandbox
        self.id = str(raw["id"])
        self.key = ""  # the sandbox's routing key (set by FaultBook.compile)
        self.service = str(raw["service"])
        self.kind = str(raw["kind"])
        self.rewrites = self.kind in REWRITES
        self.path, self.prefix = _path_glob(str(raw.get("path") or ""))
        method = raw.get("httpMethod")
        self.http_method = str(method).upper().encode() if method else None
        if self.kind == HIDE_TOOL:
            # its `tool` names the tools to hide from `tools/list`, not the request to match
            self.hidden, self.tool = _glob(raw.get("tool")), None
            self.method = _glob(raw.get("method") or "tools/list")
        else:
            self.hidden, self.tool = None, _glob(raw.get("tool"))
            self.method = _glob(raw.get("method") or ("tools/call" if raw.get("tool") else None))
        self.needs_body = (
            self.tool is not None or self.method is not None or self.kind in JSONRPC_KINDS
        )
        self.latency_ms = _int(raw.get("latencyMs"))
        self.status = _int(raw.get("status"))
        self.code = _int(raw.get("code"))
        self.message = str(raw.get("message") or "")
        self.retry_after = _int(raw.get("retryAfter"))
        self.text = str(raw.get("text") or "")
        self.fields = tuple(str(f) for f in raw.get("fields") or ())
        self.chunk_delay_ms = _int(raw.get("chunkDelayMs"))
        probability = raw.get("probability")
        self.probability = 1.0 if probability is None else float(probability)
        self.rng = _rng(raw.get("seed")) if self.probability < 1.0 else None
        """Only a fault that draws has one (2.5 KB each: most faults always fire)."""
        self.nth = _int(raw.get("nth"))
        self.after = _int(raw.get("after")) or 0
        self.times = _int(raw.get("times"))
        self.matched = 0
        self.injected = 0
        self.unread = 0
        self.unrewritten = 0  # fired, but its response passed unrewritten (`rewrite.LIMIT`)

    def header(self) -> bytes:
        """The `sandboxd-fault` header's value."""
        return f"{self.kind}; id={self.id}".encode()

    def matches(self, http_method: bytes, path: bytes, rpc: Rpc | None, read: bool) -> bool:
        if self.http_method is not None and http_method != self.http_method:
            return False
        pattern = self.path
        if pattern is not None and (
            not path.startswith(self.prefix) or pattern.fullmatch(path) is None
        ):
            return False
        if self.needs_body:
            if not read:
                self.unread += 1
                return False
            if rpc is None:
                return False  # not one JSON-RPC message (a GET, a batch, not JSON)
            if self.kind in JSONRPC_KINDS and rpc.id is None:
                return False  # a notification or a response: there is no request to answer
            if self.method is not None and self.method.fullmatch(rpc.method) is None:
                return False
            if self.tool is not None and self.tool.fullmatch(rpc.tool) is None:
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
        rng = self.rng
        if rng is not None and rng.random() >= self.probability:
            return False
        self.injected += 1
        return True


class Rpc:
    """The facts of one JSON-RPC message that faults match on (an MCP request's body)."""

    __slots__ = ("id", "method", "tool")

    def __init__(self, method: str, rpc_id: object, tool: str) -> None:
        self.method = method
        self.id = rpc_id
        self.tool = tool  # `params.name` ("" when absent)


def rpc_of(body: bytes) -> Rpc | None:
    """The JSON-RPC message in `body`; None when it is not one message (a batch carries no one
    method: it matches no JSON-RPC filter) or not JSON."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return None
    params = message.get("params")
    name = params.get("name") if isinstance(params, dict) else None
    return Rpc(message["method"], message.get("id"), name if isinstance(name, str) else "")


class Verdict:
    """What a request gets: `latency_ms` added (the sum of the firing latency faults), then
    `answer` (a fault the router answers itself), or the upstream's response rewritten by
    `rewrite` (a `REWRITES` kind), or, when both are None, the upstream's response."""

    __slots__ = ("answer", "delayed", "latency_ms", "rewrite", "rpc_id")

    def __init__(
        self, delayed: list[Fault], answer: Fault | None, rpc: Rpc | None, rewrite: Fault | None
    ) -> None:
        self.delayed = delayed
        self.answer = answer
        self.rewrite = rewrite
        """Set back to None when its response could not be rewritten (it is then not named)."""
        self.latency_ms = sum(f.latency_ms or 0 for f in delayed)
        self.rpc_id = rpc.id if rpc is not None else None

    def applied(self) -> list[Fault]:
        last = self.answer or self.rewrite
        return [*self.delayed, *([last] if last is not None else [])]

    def names(self) -> str:
        """The applied faults, for the access log: `kind; id=…` joined by commas."""
        return ", ".join(f"{f.kind}; id={f.id}" for f in self.applied())

    def headers(self) -> bytes:
        """`sandboxd-fault` header lines (CRLF-terminated), one per applied fault."""
        return b"".join(b"sandboxd-fault: " + f.header() + b"\r\n" for f in self.applied())


class ServiceFaults:
    """One sandbox's faults on one service, in list order."""

    __slots__ = ("by_path", "faults", "misses", "needs_body", "sandbox", "service")

    def __init__(self, sandbox: str, service: str, faults: list[Fault]) -> None:
        self.sandbox = sandbox
        self.service = service
        self.faults = faults
        self.needs_body = any(f.needs_body for f in faults)
        self.by_path = any(f.path is not None for f in faults)
        self.misses: dict[bytes, set[bytes]] | None = None if self.needs_body else {}
        """Method → targets no fault matches (so none would count them): the next request
        alike is waved through with two lookups. Only when no fault reads the body (its
        facts vary with the same head); bounded by MISSES per method."""

    def choose(
        self, http_method: bytes, target: bytes, rpc: Rpc | None = None, *, read: bool = True
    ) -> Verdict | None:
        """The verdict for a request, or None when no fault fires (it goes on untouched).
        `rpc`: its JSON-RPC message (MCP); `read` False: its body was too large to read.
        Cheap when nothing matches: no allocation but the path (only with a path filter)."""
        misses = self.misses
        if misses is not None:
            known = misses.get(http_method)
            if known is not None and target in known:
                return None
        query = target.find(b"?") if self.by_path else -1
        path = target[:query] if query >= 0 else target
        delayed: list[Fault] | None = None  # (allocated only when one fires)
        answer: Fault | None = None
        rewrite: Fault | None = None
        matched = False
        for fault in self.faults:
            if not fault.matches(http_method, path, rpc, read):
                continue
            matched = True
            if fault.fires():
                if fault.kind == LATENCY:
                    delayed = [fault] if delayed is None else [*delayed, fault]
                elif fault.rewrites:
                    rewrite = fault
                    break
                else:
                    answer = fault
                    break
        if not matched and misses is not None:
            known = misses.setdefault(http_method, set())
            if len(known) < MISSES:
                known.add(target)
        if delayed is None and answer is None and rewrite is None:
            return None
        return Verdict(delayed or [], answer, rpc, rewrite)


class FaultBook:
    """Every compiled fault of the current table, by (sandbox, id): kept across table builds so
    that a fault whose id stays keeps its counters (and, when unchanged, its schedule)."""

    def __init__(self) -> None:
        self._faults: dict[tuple[str, str], Fault] = {}
        self._pending: dict[tuple[str, str], Fault] = {}  # the table being replaced
        self._next: dict[tuple[str, str], Fault] = {}  # the table being compiled
        self._forms: dict[str, Mapping[str, Any]] = {}  # fault id → a wire form (shared)
        self._next_forms: dict[str, Mapping[str, Any]] = {}

    def compile(
        self, sandbox: str, raws: Iterable[Mapping[str, Any]], *, key: str = ""
    ) -> dict[str, ServiceFaults]:
        """A sandbox's faults by service (`key`: its routing key, for reports); an unchanged
        fault is the very same object."""
        by_service: dict[str, list[Fault]] = {}
        for raw in raws:
            fault = self._compiled(sandbox, raw)
            fault.key = key
            by_service.setdefault(fault.service, []).append(fault)
        return {s: ServiceFaults(sandbox, s, fs) for s, fs in by_service.items()}

    def _compiled(self, sandbox: str, raw: Mapping[str, Any]) -> Fault:
        """The old fault itself when its wire form is unchanged (nothing built: a table of
        thousands of faults is mostly unchanged ones); else a new one with the old counters."""
        old = self._pending.get((sandbox, str(raw["id"])))
        if old is not None and old.raw == raw:
            fault = old
        else:
            fault = Fault(sandbox, self._shared(raw))
            if old is not None:
                fault.matched, fault.injected, fault.unread = old.matched, old.injected, old.unread
                fault.unrewritten = old.unrewritten
        self._next[(sandbox, fault.id)] = fault  # (its id: the table's copy goes with the table)
        self._next_forms.setdefault(fault.id, fault.raw)
        return fault

    def keep(self, by_service: Mapping[str, ServiceFaults]) -> None:
        """A route carried over whole into the table being compiled: its faults too."""
        for group in by_service.values():
            for fault in group.faults:
                self._next[(fault.sandbox, fault.id)] = fault
                self._next_forms.setdefault(fault.id, fault.raw)

    def _shared(self, raw: Mapping[str, Any]) -> Mapping[str, Any]:
        """The wire form an equal fault of another sandbox holds already, if any: the same
        fault recurs across sandboxes (a generated id is a hash of the content), and one copy
        of it (and of its strings) is enough."""
        known = self._forms.get(str(raw["id"])) or self._next_forms.get(str(raw["id"]))
        return known if known is not None and known == raw else raw

    def begin(self) -> None:
        """Start compiling a new table (its faults replace the current ones at `commit`)."""
        self._pending = self._faults
        self._next, self._next_forms = {}, {}

    def commit(self) -> None:
        self._faults, self._next = self._next, {}
        self._forms, self._next_forms = self._next_forms, {}
        self._pending = {}

    def snapshot(self) -> list[tuple[str, str, int, int]]:
        """(sandbox, fault id, matched, injected) of every fault in the current table."""
        return [(s, i, f.matched, f.injected) for (s, i), f in self._faults.items()]

    def entries(self) -> list[tuple[str, str, str, int, int, int, int]]:
        """(sandbox, routing key, fault id, matched, injected, unread, unrewritten): the form
        of a router report (`report.Entry`), for the reporter's snapshot."""
        return [
            (s, f.key, i, f.matched, f.injected, f.unread, f.unrewritten)
            for (s, i), f in self._faults.items()
        ]


def _glob(pattern: object) -> re.Pattern[str] | None:
    return _text_glob(str(pattern)) if pattern else None


# Globs are compiled once per pattern, not per fault: a table repeats the same few patterns
# across its sandboxes, and the faults then share one compiled pattern.
@functools.lru_cache(maxsize=GLOBS)
def _text_glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


@functools.lru_cache(maxsize=GLOBS)
def _path_glob(path: str) -> tuple[re.Pattern[bytes] | None, bytes]:
    """The path glob's regex (None without one) and its literal start: most paths are told
    apart by the start, without the regex."""
    pattern = re.compile(fnmatch.translate(path).encode()) if path else None
    return pattern, re.split(r"[*?\[]", path, maxsplit=1)[0].encode()


def _rng(seed: Any) -> random.Random:
    # a schedule, not a secret: reproducible from `seed`
    return random.Random(seed) if seed is not None else random.Random()  # noqa: S311


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float | str) else None
