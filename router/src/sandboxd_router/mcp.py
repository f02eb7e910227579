"""MCP awareness: session affinity (sessionful era), `params._meta.baggage` in a body, and
the JSON-RPC facts a request's record carries, found by scanning bytes (no parse per request).

The scanners are heuristics, exact for the messages MCP SDKs write (compact or `json.dumps`
spacing, one message) and cheap (`bytes.find`), with known limits:
- the request's facts come from its body's first chunk only (a message split by the client
  before its `method` has none); a string with escapes is cut at its first escaped quote;
- `method` is its first occurrence, `name` (the tool) the first after `"params"`, and `id` the
  first one before `"params"`, else the last (SDKs write `id` first or last), so a key named
  `method` or `id` inside `params` can mislead only a writer that orders fields otherwise;
- a response is a JSON-RPC error when a chunk has the key `"error":` and no chunk so far had
  `"result":` (an unescaped `"error":` can only be a key: inside a string its quotes are
  escaped); a tool error when `"isError":` is followed by `true`. A key split between two
  chunks, or written with a space before its colon, is not seen; a result that nests a key
  named `isError` set to true reads as a tool error;
- the error's code is the integer after the first `"code":` past `"error":` in that chunk.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Final

from sandboxd_router.baggage import find_key
from sandboxd_router.record import JSONRPC, OK, TOOL_ERROR
from sandboxd_router.upstream import Upstream

MAX_SESSIONS = 100_000
PER_SANDBOX = 10_000
BASELINE: Final = b"baseline"


class Sessions:
    """`Mcp-Session-Id` → where its `initialize` went (upstream and route decision).

    Bounded, and partitioned so that nobody evicts another's sessions: the baseline's (which
    anyone can start, without a key) and each sandbox's are kept apart, and a full group drops
    its own oldest — the baseline's at `limit` sessions, a sandbox's at `per_sandbox`. The
    sandboxes together hold at most `limit`: past it a sandbox gives up its own oldest, and one
    with none yet takes the oldest of the largest sandbox's.
    """

    def __init__(self, *, limit: int = MAX_SESSIONS, per_sandbox: int = PER_SANDBOX) -> None:
        self._where: dict[bytes, tuple[Upstream, bytes, str | None]] = {}
        self._groups: dict[bytes, OrderedDict[bytes, None]] = {}  # decision → oldest first
        self._limit = limit
        self._per_sandbox = per_sandbox
        self._in_sandboxes = 0

    def get(self, session: bytes) -> tuple[Upstream, bytes, str | None] | None:
        """Where the session started: upstream, route decision, and the sandbox whose key it
        carried (forked or not: its faults follow the session)."""
        return self._where.get(session)

    def remember(
        self, session: bytes, upstream: Upstream, decision: bytes, sandbox: str | None = None
    ) -> None:
        """`decision`: the `sandboxd-route` value of the response that started it; only its
        first line is the session's (a line after it, such as a dead preview cookie cleared,
        was for that response)."""
        self.forget(session)
        decision = decision.partition(b"\r\n")[0]
        baseline = decision == BASELINE
        group = self._groups.get(decision)
        size = len(group) if group is not None else 0
        if size >= (self._limit if baseline else self._per_sandbox):
            self._drop_oldest(decision)
        elif not baseline and self._in_sandboxes >= self._limit:
            self._drop_oldest(decision if size else self._largest())
        self._groups.setdefault(decision, OrderedDict())[session] = None
        self._where[session] = (upstream, decision, sandbox)
        if not baseline:
            self._in_sandboxes += 1

    def forget(self, session: bytes) -> None:
        hit = self._where.pop(session, None)
        if hit is None:
            return
        decision = hit[1]
        group = self._groups[decision]
        del group[session]
        if not group:
            del self._groups[decision]
        if decision != BASELINE:
            self._in_sandboxes -= 1

    def keep_only(self, live: set[int]) -> None:
        """After a table swap: drop sessions whose upstream is no longer routed to."""
        for session in [s for s, (u, _, _) in self._where.items() if id(u) not in live]:
            self.forget(session)

    def _drop_oldest(self, decision: bytes) -> None:
        self.forget(next(iter(self._groups[decision])))

    def _largest(self) -> bytes:
        sandboxes = [d for d in self._groups if d != BASELINE]
        return max(sandboxes, key=lambda d: len(self._groups[d]))

    def __len__(self) -> int:
        return len(self._where)


def key_from_body(body: bytes, key: bytes) -> str | None:
    """The routing key in `params._meta.baggage` of a JSON-RPC message (or of the first message
    of a batch that has one); None when the body is not such JSON. Never raises: a body nested
    past the parser's depth (RecursionError), a number past int's digit limit, invalid UTF-8
    or a lone surrogate in the baggage all carry no key."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
        return None
    for item in message if isinstance(message, list) else [message]:
        baggage = _meta_baggage(item)
        if baggage is not None:
            return find_key([baggage.encode(errors="surrogatepass")], key)
    return None


def _meta_baggage(message: Any) -> str | None:
    if not isinstance(message, dict):
        return None
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    baggage = meta.get("baggage") if isinstance(meta, dict) else None
    return baggage if isinstance(baggage, str) else None


# response scan state (bits): what the response's chunks so far showed
RESULT: Final = 1
ERROR: Final = 2
IS_ERROR: Final = 4
CODE: Final = 8  # the error's code was read: it is in the bits from CODE_SHIFT up
CODE_SHIFT: Final = 8
_SPACE: Final = b" \t\r\n"
FACT_BYTES: Final = 128  # a method or tool name longer is cut


def request_facts(chunk: bytes) -> tuple[bytes | None, bytes | None, bytes | None]:
    """(JSON-RPC method, tool of `tools/call`, id as JSON text) of a request body's first
    chunk, each None when not found."""
    method = _string_at(chunk, chunk.find(b'"method"'), 8)
    params = chunk.find(b'"params"')
    tool = None
    if method == b"tools/call" and params >= 0:
        tool = _string_at(chunk, chunk.find(b'"name"', params), 6)
    at = chunk.find(b'"id"')
    if at >= 0 and 0 <= params < at:
        at = chunk.rfind(b'"id"')
    return method, tool, _token_at(chunk, at)


def scan_response(data: bytes, seen: int) -> int:
    """`seen` updated with what this response chunk shows (`RESULT`, `ERROR`, `IS_ERROR`)."""
    if data.find(b'"result":') >= 0:
        seen |= RESULT
    at = data.find(b'"error":')
    if at >= 0:
        if not seen & ERROR:
            seen |= _code(data, at)
        seen |= ERROR
    at = data.find(b'"isError":')
    if at >= 0 and data.startswith(b"true", _skip(data, at + 10)):
        seen |= IS_ERROR
    return seen


def rpc_code(seen: int) -> int | None:
    """The JSON-RPC error's code, when the response is one (`rpc_error`) and it was read."""
    if not seen & CODE or seen & RESULT:
        return None
    code = seen >> CODE_SHIFT
    return code - (1 << 32) if code >= 1 << 31 else code


def _code(data: bytes, error: int) -> int:
    """`CODE` and the code's bits, from the `code` member of the error object whose key is at
    `error` (never a `code` nested deeper, as in its `data`); 0 if none in this chunk."""
    i = _member(data, _value_at(data, error, 7), b'"code"')
    if i < 0:
        return 0
    end = i + 1 if i < len(data) and data[i] == 45 else i  # "-"
    while end < len(data) and end - i < 11 and 48 <= data[end] <= 57:
        end += 1
    try:
        code = int(data[i:end])
    except ValueError:
        return 0
    if not -(1 << 31) <= code < 1 << 31:
        return 0
    return CODE | (code & 0xFFFFFFFF) << CODE_SHIFT


def rpc_error(seen: int) -> int:
    """The error class (`record.JSONRPC`, `record.TOOL_ERROR` or `record.OK`) of a response."""
    if seen & ERROR and not seen & RESULT:
        return JSONRPC
    if seen & IS_ERROR:
        return TOOL_ERROR
    return OK


def _value_at(chunk: bytes, at: int, size: int) -> int:
    """Where the value of the key found at `at` (`size` bytes long) begins; -1 if nowhere."""
    if at < 0:
        return -1
    i = _skip(chunk, at + size)
    if i >= len(chunk) or chunk[i] != 58:  # ":"
        return -1
    return _skip(chunk, i + 1)


def _string_at(chunk: bytes, at: int, size: int) -> bytes | None:
    i = _value_at(chunk, at, size)
    if i < 0 or i >= len(chunk) or chunk[i] != 34:  # '"'
        return None
    end = chunk.find(b'"', i + 1)
    return chunk[i + 1 : min(end, i + 1 + FACT_BYTES)] if end > i else None


def _token_at(chunk: bytes, at: int) -> bytes | None:
    """The id's JSON text: a string with its quotes, or a number (cut at 40 bytes)."""
    i = _value_at(chunk, at, 4)
    if i < 0 or i >= len(chunk):
        return None
    if chunk[i] == 34:
        end = chunk.find(b'"', i + 1)
        return chunk[i : min(end + 1, i + 40)] if end > i else None
    end = i
    while end < len(chunk) and end - i < 40 and chunk[end] not in b",} \t\r\n]":
        end += 1
    return chunk[i:end] if end > i else None


def _member(chunk: bytes, start: int, name: bytes) -> int:
    """Where the value of the member `name` (quoted) of the object that begins at `start`
    begins; -1 if it is no object or the member is not in this chunk. Only the object's own
    members count: strings are skipped whole and nested values by their depth. (A byte loop,
    but it runs only on an error response.)"""
    if start < 0 or start >= len(chunk) or chunk[start] != 123:  # "{"
        return -1
    depth, i = 0, start
    while i < len(chunk):
        c = chunk[i]
        if c == 34:  # '"': a key or a string value, whole
            end = _string_end(chunk, i)
            if end < 0:
                return -1
            if depth == 1 and end - i + 1 == len(name) and chunk.startswith(name, i):
                value = _value_at(chunk, i, len(name))  # (a value "code" has no ":" after it)
                if value >= 0:
                    return value
            i = end + 1
            continue
        if c == 123 or c == 91:  # "{" "["
            depth += 1
        elif c == 125 or c == 93:  # "}" "]"
            depth -= 1
            if depth == 0:
                return -1
        i += 1
    return -1


def _string_end(chunk: bytes, quote: int) -> int:
    """The closing quote of the JSON string opened at `quote`; -1 if not in this chunk."""
    i = quote + 1
    while True:
        i = chunk.find(b'"', i)
        if i < 0:
            return -1
        escapes = 0
        while chunk[i - 1 - escapes] == 92:  # "\\": an odd run escapes the quote
            escapes += 1
        if escapes % 2 == 0:
            return i
        i += 1


def _skip(chunk: bytes, i: int) -> int:
    while i < len(chunk) and chunk[i] in _SPACE:
        i += 1
    return i
