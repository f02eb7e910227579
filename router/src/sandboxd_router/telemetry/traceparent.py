"""The W3C `traceparent` header, read the way Trace Context level 1 tells a receiver to: the
router's span becomes a child of the caller's span, or (no valid header) starts no trace.

`{version}-{trace-id}-{parent-id}-{flags}`, lowercase hex. Version 00 is exactly 55
characters; a later version may be longer and is read by its first four fields when the 56th
character is a dash; version ff is invalid, as are all-zero ids.
"""

from __future__ import annotations

from typing import Final

_ZERO_TRACE: Final = bytes(16)
_ZERO_SPAN: Final = bytes(8)
_LENGTH: Final = 55
_BLANK: Final = " \t"
_HEX: Final = "0123456789abcdef"
_fromhex: Final = bytes.fromhex


def ids(value: str | None) -> tuple[bytes, bytes] | None:
    """The trace id's 16 bytes and the parent span id's 8, or None when the header is absent
    or invalid. (This runs for every span exported: a few slices and `bytes.fromhex`, which
    checks the ids' digits, rather than a regular expression and text.)"""
    if not value:
        return None
    if len(value) == _LENGTH and value[2] == "-" and value[35] == "-" and value[52] == "-":
        return _fields(value)  # (most headers: nothing around it, nothing after it)
    value = value.strip(_BLANK)  # optional whitespace around a field value is not the value
    if len(value) < _LENGTH or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    if len(value) > _LENGTH and (value.startswith("00") or value[_LENGTH] != "-"):
        return None  # (a later version may add fields after a dash; 00 has none)
    return _fields(value[:_LENGTH])


def _fields(fields: str) -> tuple[bytes, bytes] | None:
    """`ids` of the first four fields, 55 characters with their dashes in place."""
    # the version and the flags: hex digits (a version ff is invalid)
    if fields[0] not in _HEX or fields[1] not in _HEX or fields[53] not in _HEX:
        return None
    if fields[54] not in _HEX or (fields[0] == "f" and fields[1] == "f"):
        return None
    if fields.lower() != fields:  # lowercase hex only (`fromhex` takes both)
        return None
    try:  # (a digit pair short, as a space between pairs makes it, is a wrong length)
        trace, parent = _fromhex(fields[3:35]), _fromhex(fields[36:52])
    except ValueError:
        return None
    if len(trace) != 16 or len(parent) != 8 or trace == _ZERO_TRACE or parent == _ZERO_SPAN:
        return None
    return trace, parent


def parse(value: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) as lowercase hex, or None when the header is absent or
    invalid."""
    context = ids(value)
    if context is None:
        return None
    return context[0].hex(), context[1].hex()
