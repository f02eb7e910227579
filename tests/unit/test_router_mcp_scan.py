"""The response scanner's JSON-RPC facts (`sandboxd_router.mcp`): the error class and the
error's code as a span reports them (`error.type`, `rpc.response.status_code`)."""

from __future__ import annotations

import json

import pytest

from sandboxd_router import mcp, record


def scanned(*chunks: bytes) -> int:
    seen = 0
    for chunk in chunks:
        seen = mcp.scan_response(chunk, seen)
    return seen


def error(code: object, **extra: object) -> bytes:
    body = {"jsonrpc": "2.0", "id": 1, "error": {"code": code, "message": "no", **extra}}
    return json.dumps(body).encode()


@pytest.mark.parametrize("code", [-32601, -32000, 0, 7, -(2**31), 2**31 - 1])
def test_the_error_code_is_read(code: int) -> None:
    seen = scanned(error(code))
    assert mcp.rpc_error(seen) == record.JSONRPC
    assert mcp.rpc_code(seen) == code


def test_compact_and_sse_framed_errors_are_read() -> None:
    compact = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad"}}'
    assert mcp.rpc_code(scanned(compact)) == -32602
    framed = b"event: message\ndata: " + compact + b"\n\n"
    assert mcp.rpc_code(scanned(b": ping\n\n", framed)) == -32602


@pytest.mark.parametrize(
    "body",
    [
        error("oops"),  # not a number
        error(2**31),  # past the record's 32 bits
        error(None),
        b'{"jsonrpc":"2.0","id":1,"error":{"message":"no code"}}',
    ],
)
def test_a_code_that_is_no_32_bit_integer_is_not_reported(body: bytes) -> None:
    seen = scanned(body)
    assert mcp.rpc_error(seen) == record.JSONRPC
    assert mcp.rpc_code(seen) is None


def test_the_first_errors_code_counts() -> None:
    assert mcp.rpc_code(scanned(error(-32001), error(-32002))) == -32001


def test_a_result_is_no_error_and_has_no_code() -> None:
    result = b'{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":false}}'
    assert mcp.rpc_code(scanned(result, error(-32603))) is None
    assert mcp.rpc_error(scanned(result)) == record.OK
