"""The W3C `traceparent` header, read the way Trace Context level 1 tells a receiver to: the
router's span becomes a child of the caller's span, or (no valid header) starts no trace.

`{version}-{trace-id}-{parent-id}-{flags}`, lowercase hex. Version 00 is exactly 55
characters; a later version may be longer and is read by its first four fields when the 56th
character is a dash; version ff is invalid, as are all-zero ids.

Read from the bytes the request path recorded (`fields_of`): this runs for every span exported,
so the common header is checked whole by one `translate` and one comparison with the form it
must have, with no text made.
"""

from __future__ import annotations

from binascii import unhexlify
from typing import Final

_LENGTH: Final = 55
_BLANK: Final = b" \t"
_DASH: Final = 0x2D
_F: Final = 0x66
_ZERO: Final = 0x30
_DIGITS: Final = bytes(
    0x30 if chr(c) in "0123456789abcdef" else c if c == _DASH else 0x78 for c in range(256)
)
"""A translation table: a lowercase hex digit → "0", a dash stays, anything else → "x"."""
_FORM: Final = b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-00"
"""What `_DIGITS` makes of every well-formed 55 characters, and of nothing else."""
_ZERO_TRACE: Final = b"0" * 32
_ZERO_SPAN: Final = b"0" * 16


def ids(value: str | None) -> tuple[bytes, bytes] | None:
    """The trace id's 16 bytes and the parent span id's 8, or None when the header is absent
    or invalid."""
    return ids_of(_ascii(value))


def ids_of(raw: bytes) -> tuple[bytes, bytes] | None:
    """`ids` of the header's bytes (b"": none)."""
    fields = fields_of(raw)
    if fields is None:
        return None
    return unhexlify(fields[3:35]), unhexlify(fields[36:52])


def fields(value: str | None) -> bytes | None:
    """`fields_of` the header's text."""
    return fields_of(_ascii(value))


def fields_of(raw: bytes) -> bytes | None:
    """The header's first four fields (55 bytes: the trace id's digits at 3 to 35, the parent
    span id's at 36 to 52) when it is valid, else None. (The OTLP encoder decodes the digits
    straight into its output.)"""
    if len(raw) == _LENGTH:  # (most headers: nothing around it, nothing after it)
        return _valid(raw)
    raw = raw.strip(_BLANK)  # optional whitespace around a field value is not the value
    if len(raw) == _LENGTH:
        return _valid(raw)
    if len(raw) < _LENGTH or raw.startswith(b"00") or raw[_LENGTH] != _DASH:
        return None  # (a later version may add fields after a dash; 00 has none)
    return _valid(raw[:_LENGTH])


def _valid(fields: bytes) -> bytes | None:
    """`fields`, 55 bytes, if they are valid."""
    if fields.translate(_DIGITS) != _FORM:  # lowercase hex digits, dashes in their places
        return None
    if fields[0] == _F and fields[1] == _F:  # version ff is invalid
        return None
    # all-zero ids (a slice only when the first digit is a zero)
    if fields[3] == _ZERO and fields[3:35] == _ZERO_TRACE:
        return None
    if fields[36] == _ZERO and fields[36:52] == _ZERO_SPAN:
        return None
    return fields


def _ascii(value: str | None) -> bytes:
    return value.encode("ascii", "replace") if value else b""  # (past ASCII is no digit)


def parse(value: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) as lowercase hex, or None when the header is absent or
    invalid."""
    context = ids(value)
    if context is None:
        return None
    return context[0].hex(), context[1].hex()
