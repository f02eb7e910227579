"""The response scanner's JSON-RPC facts (`sandboxd_router.mcp`): the error class and the
error's code as a span reports them (`error.type`, `rpc.response.status_code`)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@pytest.mark.parametrize(
    "body",
    [
        # a server that writes `data` before `code`: the nested code is not the error's
        b'{"jsonrpc":"2.0","id":1,"error":{"data":{"code":7},"message":"no","code":-32602}}',
        b'{"jsonrpc":"2.0","id":1,"error":{"data":[{"code":7}],"code":-32602}}',
        # "code" as a string value, and quotes escaped inside a string, are no member
        b'{"jsonrpc":"2.0","id":1,"error":{"message":"code","code":-32602}}',
        b'{"jsonrpc":"2.0","id":1,"error":{"message":"a \\"code\\": 7 \\\\","code":-32602}}',
        b'{"jsonrpc":"2.0","id":1,"error": {"data":"{\\"code\\":7}" , "code" : -32602}}',
    ],
)
def test_only_the_error_objects_own_code_counts(body: bytes) -> None:
    json.loads(body)  # (each case is valid JSON)
    assert mcp.rpc_code(scanned(body)) == -32602


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","id":1,"error":{"data":{"code":7},"message":"no"}}',
        b'{"jsonrpc":"2.0","id":1,"error":"code"}',
        b'[{"jsonrpc":"2.0","id":1,"error":{"message":"no"}},{"id":2,"code":-32602}]',
    ],
)
def test_a_code_outside_the_error_object_is_not_reported(body: bytes) -> None:
    json.loads(body)
    seen = scanned(body)
    assert mcp.rpc_error(seen) == record.JSONRPC
    assert mcp.rpc_code(seen) is None


# (keys the scanner looks for anywhere in a chunk — "result", "error", "isError" — are left
# out: a response with a "result" member anywhere counts as a result, by design)
KEY = st.text(max_size=6).filter(lambda k: k not in ("result", "error", "isError"))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEY, inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(code=st.integers(-(2**31), 2**31 - 1), before=st.dictionaries(KEY, JSON, max_size=3),
       after=st.dictionaries(KEY, JSON, max_size=3))  # fmt: skip
def test_any_error_object_gives_its_own_code(
    code: int, before: dict[str, object], after: dict[str, object]
) -> None:
    members = {**{k: v for k, v in before.items() if k != "code"}, "code": code}
    members.update((k, v) for k, v in after.items() if k != "code")
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "error": members}).encode()
    assert mcp.rpc_code(scanned(body)) == code


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.lists(st.binary(max_size=60), max_size=4))
def test_any_bytes_are_scanned_without_raising(chunks: list[bytes]) -> None:
    seen = scanned(*(b'{"error":' + c for c in chunks))
    assert mcp.rpc_error(seen) in (record.JSONRPC, record.TOOL_ERROR, record.OK)
