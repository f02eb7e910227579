"""The W3C `traceparent` header, read the way Trace Context level 1 tells a receiver to: the
router's span becomes a child of the caller's span, or (no valid header) starts no trace.

`{version}-{trace-id}-{parent-id}-{flags}`, lowercase hex. Version 00 is exactly 55
characters; a later version may be longer and is read by its first four fields when the 56th
character is a dash; version ff is invalid, as are all-zero ids.

Read from the bytes the request path recorded (`fields_of`, `decode`): this runs for every span
exported, so the 55 bytes are checked and their ids decoded in one pass, eight digits at a time
(SWAR: the digits of one 64-bit read tested and decoded together; compiled, `i64` arithmetic
is machine arithmetic), with no object made.
"""

from __future__ import annotations

from typing import Final

from librt.strings import read_i16_le, read_i64_le
from mypy_extensions import i64

LENGTH: Final = 55
"""The length of version 00, and of the first four fields of any version."""
_BLANK: Final = b" \t"
_DASH: Final = 0x2D
_VERSION_FF: Final = 0x6666  # "ff" read as a little-endian 16-bit number
_HIGH_BITS: Final = 0x0080808080808080
"""Bit 7 of every byte but the last (whose bit 7 is an i64's sign: a constant that large
would be a boxed int, converted at each use)."""
_LOW_BYTES: Final = 0x00FF00FF00FF00FF
_BIT7: Final = 0x0080008000800080
_NIBBLES: Final = 0x000F000F000F000F
_FOUR_ZEROS: Final = 0x3030303000000000
_I32_MAX: Final = 0x7FFFFFFF
_WRAP: Final = 1 << 32


def ids(value: str | None) -> tuple[bytes, bytes] | None:
    """The trace id's 16 bytes and the parent span id's 8, or None when the header is absent
    or invalid."""
    return ids_of(_ascii(value))


def ids_of(raw: bytes) -> tuple[bytes, bytes] | None:
    """`ids` of the header's bytes (b"": none)."""
    fields = fields_of(raw)
    if fields is None:
        return None
    _, high, low, parent = decode(fields)
    return _bytes(high) + _bytes(low), _bytes(parent)


def _bytes(number: i64) -> bytes:
    """The 8 bytes a signed little-endian number is (`decode`)."""
    return int(number).to_bytes(8, "little", signed=True)


def fields(value: str | None) -> bytes | None:
    """`fields_of` the header's text."""
    return fields_of(_ascii(value))


def fields_of(raw: bytes) -> bytes | None:
    """The header's first four fields (55 bytes: the trace id's digits at 3 to 35, the parent
    span id's at 36 to 52) when it is valid, else None. (The OTLP encoder decodes the digits
    straight into its output.)"""
    if len(raw) == LENGTH:  # (most headers: nothing around it, nothing after it)
        return _valid(raw)
    raw = raw.strip(_BLANK)  # optional whitespace around a field value is not the value
    if len(raw) == LENGTH:
        return _valid(raw)
    if len(raw) < LENGTH or raw.startswith(b"00") or raw[LENGTH] != _DASH:
        return None  # (a later version may add fields after a dash; 00 has none)
    return _valid(raw[:LENGTH])


def _valid(fields: bytes) -> bytes | None:
    """`fields`, 55 bytes, if they are valid."""
    return fields if decode(fields)[0] else None


def decode(fields: bytes) -> tuple[bool, i64, i64, i64]:
    """Whether 55 bytes are a valid header's first four fields, and if so its ids: the trace
    id's first 8 bytes and its last 8, and the parent span id's 8, each read as a signed
    little-endian number (what `write_i64_le` writes back as those bytes); 0, 0, 0 when not
    valid. (A tuple of native ints: compiled, no object is made.)"""
    if len(fields) != LENGTH:
        return False, 0, 0, 0
    if fields[2] != _DASH or fields[35] != _DASH or fields[52] != _DASH:
        return False, 0, 0, 0
    version = read_i16_le(fields, 0)
    if version == _VERSION_FF:  # version ff is invalid
        return False, 0, 0, 0
    # the version's two digits and the flags', then four zeros, as the digits of one number
    version_and_flags = i64(version) & 0xFFFF | (i64(read_i16_le(fields, 53)) & 0xFFFF) << 16
    if _group(version_and_flags | _FOUR_ZEROS) < 0:
        return False, 0, 0, 0
    high_ok, high = _eight(fields, 3)
    low_ok, low = _eight(fields, 19)
    parent_ok, parent = _eight(fields, 36)
    if not (high_ok and low_ok and parent_ok):
        return False, 0, 0, 0
    if (high == 0 and low == 0) or parent == 0:  # all-zero ids are invalid
        return False, 0, 0, 0
    return True, high, low, parent


def _eight(fields: bytes, at: i64) -> tuple[bool, i64]:
    """Whether the 16 digits at `at` are lowercase hex, and the 8 bytes they stand for, as a
    signed little-endian number."""
    first = _group(read_i64_le(fields, at))
    last = _group(read_i64_le(fields, at + 8))
    if first < 0 or last < 0:
        return False, 0
    if last > _I32_MAX:  # the last byte's high bit is the number's sign (so nothing overflows)
        last -= _WRAP
    return True, first | last * _WRAP


def _group(x: i64) -> i64:
    """The 4 bytes that the 8 hex digits of `x` (the first in its lowest byte) stand for, as a
    little-endian number; -1 when any is not a lowercase hex digit.

    SWAR: the digits of the pairs' high nibbles and those of their low nibbles each in the low
    byte of a 16-bit lane; each test is one addition whose carry into a lane's bit 7 says which
    side of a bound that lane's digit is (digits below 0x80: no carry leaves its lane, nothing
    reaches an i64's sign)."""
    if x < 0 or x & _HIGH_BITS:  # past ASCII
        return -1
    high = x & _LOW_BYTES
    low = (x >> 8) & _LOW_BYTES
    high_letter = (high + 0x001F001F001F001F) & ((high + 0x0019001900190019) & _BIT7 ^ _BIT7)
    low_letter = (low + 0x001F001F001F001F) & ((low + 0x0019001900190019) & _BIT7 ^ _BIT7)
    high_digit = (high + 0x0050005000500050) & ((high + 0x0046004600460046) & _BIT7 ^ _BIT7)
    low_digit = (low + 0x0050005000500050) & ((low + 0x0046004600460046) & _BIT7 ^ _BIT7)
    # "0"-"9" (0x30-0x39) or "a"-"f" (0x61-0x66) in every lane of both
    if (high_digit | high_letter) & (low_digit | low_letter) != _BIT7:
        return -1
    high = (high & _NIBBLES) + (high_letter >> 7) * 9
    low = (low & _NIBBLES) + (low_letter >> 7) * 9
    pairs = high << 4 | low  # a byte a lane
    pairs = (pairs | pairs >> 8) & 0x0000FFFF0000FFFF
    return (pairs | pairs >> 16) & 0xFFFFFFFF


def _ascii(value: str | None) -> bytes:
    return value.encode("ascii", "replace") if value else b""  # (past ASCII is no digit)


def parse(value: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) as lowercase hex, or None when the header is absent or
    invalid."""
    context = ids(value)
    if context is None:
        return None
    return context[0].hex(), context[1].hex()
