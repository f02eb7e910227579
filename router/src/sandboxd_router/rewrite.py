"""Rewriting an upstream's response for a fault of a `faults.REWRITES` kind. Pure: no I/O.

The exchange buffers the response (only for a request such a fault fired on) and hands the
whole body here. What is rewritten:
- http: a JSON body (`application/json`, `+json`, or no Content-Type at all);
- mcp: the JSON-RPC response to the request (by its `id`): a JSON body, or the matching event
  of an SSE body (the other events, comments, `id:` and `retry:` lines pass as they came).
A body that is not that (not JSON, an error, an answer that is no tool result for a tool
kind), or over `LIMIT`, passes untouched: `rewritten` returns None.

Dotted `fields` (`drop_fields`) walk objects by key; through a list they apply to each item
(`items.name` drops `name` from every item of `items`).
"""

from __future__ import annotations

import functools
import json
import re
from collections import deque
from typing import Any, Final

import orjson

from sandboxd_router.faults import Fault

LIMIT: Final = 1024 * 1024
"""Response bodies larger than this pass through unrewritten (counted: `Fault.unrewritten`)."""
EVENT_END: Final = re.compile(rb"\r\n\r\n|\n\n|\r\r")
# JSON is read and written with orjson: on a 4 KiB tool result, parsing and encoding were about
# 90 % of a rewrite with the standard library (131 µs, and 0.23 ms added per request). Where
# orjson would not give back what came, the standard library does: it reads an integer beyond
# 64 bits as a float (so a body with a run of 20 digits is read exactly), and it writes neither
# such an integer nor nesting past 254 levels. What neither reads (NaN, bad JSON) passes
# untouched, as any answer that is not one the fault rewrites.
_BAD_JSON: Final = (ValueError, RecursionError)  # (orjson.JSONDecodeError is a ValueError)
_DIGITS: Final = bytes.maketrans(b"0123456789", b"\0" * 10)
_LONG_NUMBER: Final = b"\0" * 20  # 20 digits in a row, digits made NULs (JSON holds no raw NUL):
# a translate and a substring search, several times cheaper than a regex over the body
_EXACT: Final = json.JSONEncoder(check_circular=False)  # (what it writes was just parsed: no cycle)


def _loads(data: bytes | str) -> Any:
    raw = data.encode() if isinstance(data, str) else data
    return json.loads(raw) if _LONG_NUMBER in raw.translate(_DIGITS) else orjson.loads(raw)


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits, or nesting too deep for orjson
        return _EXACT.encode(value).encode()


def rewritten(
    fault: Fault, body: bytes, *, ctype: bytes, mcp: bool, rpc_id: object
) -> bytes | None:
    """The new body, or None when this response is not one the fault rewrites."""
    media = ctype.split(b";", 1)[0].strip().lower()
    if mcp and media == b"text/event-stream":
        return _sse(fault, body, rpc_id)
    if media and media != b"application/json" and not media.endswith(b"+json"):
        return None
    return _json(fault, body, mcp=mcp, rpc_id=rpc_id)


def _json(fault: Fault, body: bytes, *, mcp: bool, rpc_id: object) -> bytes | None:
    try:
        value = _loads(body)
        if mcp and not _answers(value, rpc_id):
            return None
        if fault.kind == "malformed":
            return _cut(body)
        new = _message(fault, value) if mcp else _plain(fault, value)
        return None if new is None else _dumps(new)
    except _BAD_JSON:
        return None


def _sse(fault: Fault, body: bytes, rpc_id: object) -> bytes | None:
    """Rewrite the first event whose data is the response to the request."""
    pos = 0
    for end in EVENT_END.finditer(body):
        event = body[pos : end.start()]
        new = _event(fault, event, rpc_id)
        if new is not None:
            return body[:pos] + new + body[end.start() :]
        pos = end.end()
    return None


def _event(fault: Fault, event: bytes, rpc_id: object) -> bytes | None:
    lines = event.splitlines()
    data = [ln for ln in lines if ln.startswith(b"data:")]
    if not data:
        return None
    payload = b"\n".join(ln[5:].removeprefix(b" ") for ln in data)
    new = _json(fault, payload, mcp=True, rpc_id=rpc_id)
    if new is None:
        return None
    eol = b"\r\n" if b"\r\n" in event else b"\n"
    others = [ln for ln in lines if not ln.startswith(b"data:")]
    return eol.join([*others, b"data: " + new])


def _answers(message: object, rpc_id: object) -> bool:
    """A JSON-RPC result (not an error) answering the request (any, when its id is unknown)."""
    return (
        isinstance(message, dict)
        and isinstance(message.get("result"), dict)
        and (rpc_id is None or message.get("id") == rpc_id)
    )


def _cut(body: bytes) -> bytes | None:
    """A proper prefix of an object or array: its closing bracket is missing, so it is never
    valid JSON (a cut scalar could be: `12` from `1234`)."""
    text = body.strip()
    if text[:1] not in (b"{", b"["):
        return None
    return text[: max(1, len(text) // 2)]


def _message(fault: Fault, message: dict[str, Any]) -> dict[str, Any] | None:
    result = message["result"]
    kind = fault.kind
    if kind == "hide_tool":
        tools, hidden = result.get("tools"), fault.hidden
        if not isinstance(tools, list) or hidden is None:
            return None
        kept = [t for t in tools if not _named(t, hidden)]
        return {**message, "result": {**result, "tools": kept}}
    content = result.get("content")
    if not isinstance(content, list):
        return None  # not a tool result
    # `message` was just parsed for this response alone: changed in place
    if kind == "empty_result":
        result["content"] = []
        if "structuredContent" in result:
            result["structuredContent"] = {}
    elif kind == "drop_fields":
        tree = _tree(fault.fields)
        for item in content:
            _drop_in_text(item, tree)
        _drop(result.get("structuredContent"), tree)
    elif kind == "inject":
        content.append({"type": "text", "text": fault.text})
    else:
        return None
    return message


def _plain(fault: Fault, value: object) -> object | None:
    if fault.kind == "empty_result":
        return [] if isinstance(value, list) else {} if isinstance(value, dict) else None
    if fault.kind == "drop_fields":
        _drop(value, _tree(fault.fields))
        return value
    return None  # (inject, hide_tool: MCP kinds)


def _named(tool: object, hidden: re.Pattern[str]) -> bool:
    name = tool.get("name") if isinstance(tool, dict) else None
    return isinstance(name, str) and hidden.fullmatch(name) is not None


def _drop_in_text(item: object, tree: Tree) -> None:
    """A text content item whose text is a JSON object or array: without the fields."""
    if not isinstance(item, dict) or item.get("type") != "text":
        return
    text = item.get("text")
    if not isinstance(text, str) or text.lstrip()[:1] not in ("{", "["):
        return
    try:
        value = _loads(text)
        _drop(value, tree)
        item["text"] = _dumps(value).decode()
    except _BAD_JSON:
        return


Tree = dict[str, "Tree | None"]
"""Dotted fields as a tree of keys, walked once for all of them: None drops the key."""


@functools.lru_cache(maxsize=256)
def _tree(fields: tuple[str, ...]) -> Tree:
    tree: Tree = {}
    for field in fields:
        node: Tree | None = tree
        *parents, last = field.split(".")
        for key in parents:
            if node is None:
                break
            # (a key that goes whole already has nothing below it to drop)
            node = None if key in node and node[key] is None else node.setdefault(key, {})
        if node is not None:
            node[last] = None
    return tree


def _drop(value: object, tree: Tree) -> None:
    """Delete the tree's fields from `value`, in place; through a list, from each item."""
    if isinstance(value, list):
        for item in value:
            _drop(item, tree)
    elif isinstance(value, dict):
        for key, below in tree.items():
            if key not in value:
                continue
            if below is None:
                del value[key]
            else:
                _drop(value[key], below)


class Paced:
    """`slow_stream`: a response's body let out in pieces `delay` seconds apart — the pieces
    the upstream sent, or, for SSE, one event each (a partial event waits for its end). Over
    `LIMIT` queued, the exchange stops reading the upstream until the queue drains below it."""

    __slots__ = ("carry", "delay", "ended", "pieces", "size", "sse", "waiting")

    def __init__(self, delay: float, *, sse: bytes) -> None:
        self.delay = delay
        self.sse = sse.split(b";", 1)[0].strip().lower() == b"text/event-stream"
        self.pieces: deque[bytes] = deque()
        self.carry = b""
        self.ended = False
        self.waiting = False  # a turn is scheduled
        self.size = 0  # bytes queued

    def add(self, data: bytes) -> bool:
        """Queue the data; True when the caller must schedule a turn."""
        self.size += len(data)
        if self.sse:
            data, pos = self.carry + data, 0
            for end in EVENT_END.finditer(data):
                self.pieces.append(data[pos : end.end()])
                pos = end.end()
            self.carry = data[pos:]
        else:
            self.pieces.append(data)
        return self._schedule()

    def end(self) -> bool:
        """The upstream's body is whole; True when the caller must schedule a turn."""
        self.ended = True
        if self.carry:
            self.pieces.append(self.carry)
            self.carry = b""
        return self._schedule()

    def _schedule(self) -> bool:
        if self.waiting or not self.pieces:
            return False
        self.waiting = True
        return True

    def pending(self) -> bool:
        return bool(self.pieces) or self.waiting

    def next(self) -> bytes | None:
        if not self.pieces:
            return None
        piece = self.pieces.popleft()
        self.size -= len(piece)
        return piece
