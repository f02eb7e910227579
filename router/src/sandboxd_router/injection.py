"""The responses of the faults the router answers itself (`faults.ANSWERS`), as bytes.

HTTP kinds answer with the router's JSON body `{"error": "injected_fault", "kind", "sandbox",
"service"}`. The JSON-RPC kinds answer HTTP 200 with a JSON-RPC message carrying the request's
`id`: as `application/json` whenever the request's Accept allows it (every MCP client must
accept it, in both eras: see reference/mcp-wire.md), else as one SSE `message` event. Every
answer has a Content-Length, so the connection stays usable.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from sandboxd_router.faults import Fault, Verdict

JSON = b"application/json"
SSE = b"text/event-stream"
STATELESS = b"2026-07-28"
STATUS = {"rate_limit": 429, "timeout": 504}  # http_error: its `status`, 503 by default


def answer(
    verdict: Verdict,
    *,
    sandbox: str,
    service: str,
    route: bytes,
    accept: list[bytes],
    protocol: list[bytes],
    close: bool,
    head_only: bool = False,
) -> tuple[int, bytes]:
    """(status, the whole response) for `verdict.answer` (not `reset`: that has no response);
    `head_only`: a HEAD request's (its Content-Length, no body)."""
    fault = verdict.answer
    assert fault is not None
    kind = fault.kind
    extra = b""
    if kind == "jsonrpc_error" or kind == "tool_error":
        status = 200
        message = _jsonrpc(fault, verdict.rpc_id, stateless=_stateless(protocol))
        body, ctype = _framed(message, accept)
    else:
        status = STATUS.get(kind) or fault.status or 503
        if kind == "rate_limit":
            extra = b"Retry-After: %d\r\n" % (1 if fault.retry_after is None else fault.retry_after)
        error = {"error": "injected_fault", "kind": kind, "sandbox": sandbox, "service": service}
        body, ctype = json.dumps(error).encode(), JSON
    phrase = _phrase(status)
    head = (
        b"HTTP/1.1 %d %b\r\nContent-Type: %b\r\nContent-Length: %d\r\n%bsandboxd-route: %b\r\n%b"
        % (status, phrase, ctype, len(body), extra, route, verdict.headers())
    )
    if close:
        head += b"Connection: close\r\n"
    return status, head + b"\r\n" + (b"" if head_only else body)


def _stateless(protocol: list[bytes]) -> bool:
    """The 2026-07-28 era (or later: versions are dates), from `MCP-Protocol-Version`."""
    return bool(protocol) and protocol[-1].strip() >= STATELESS


def _jsonrpc(fault: Fault, rpc_id: Any, *, stateless: bool) -> bytes:
    if fault.kind == "jsonrpc_error":
        code = fault.code if fault.code is not None else -32603
        error = {"code": code, "message": fault.message or "injected fault"}
        return json.dumps({"jsonrpc": "2.0", "id": rpc_id, "error": error}).encode()
    result: dict[str, Any] = {
        "content": [{"type": "text", "text": fault.message or "injected fault"}],
        "isError": True,
    }
    if stateless:  # its schema requires the tag (older eras' clients may reject unknown keys)
        result["resultType"] = "complete"
    return json.dumps({"jsonrpc": "2.0", "id": rpc_id, "result": result}).encode()


def _framed(message: bytes, accept: list[bytes]) -> tuple[bytes, bytes]:
    """JSON when the client takes it (or says nothing); one SSE event when it takes only SSE."""
    ranges = [r.split(b";", 1)[0].strip().lower() for v in accept for r in v.split(b",")]
    if not ranges or any(r in (JSON, b"application/*", b"*/*") for r in ranges):
        return message, JSON
    if SSE in ranges or b"text/*" in ranges:
        return b"event: message\r\ndata: " + message + b"\r\n\r\n", SSE
    return message, JSON


def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Injected Fault"
