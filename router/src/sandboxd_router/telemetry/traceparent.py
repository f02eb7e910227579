"""The W3C `traceparent` header, read the way Trace Context level 1 tells a receiver to: the
router's span becomes a child of the caller's span, or (no valid header) starts no trace.

`{version}-{trace-id}-{parent-id}-{flags}`, lowercase hex. Version 00 is exactly 55
characters; a later version may be longer and is read by its first four fields when the 56th
character is a dash; version ff is invalid, as are all-zero ids.
"""

from __future__ import annotations

import re
from typing import Final

_FIELDS: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
_LENGTH: Final = 55


def parse(value: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id), or None when the header is absent or invalid."""
    if not value:
        return None
    value = value.strip(" \t")  # optional whitespace around a field value is not the value
    match = _FIELDS.match(value)
    if match is None:
        return None
    version, trace, parent = match.groups()
    if version == "ff" or trace == _ZERO_TRACE or parent == _ZERO_SPAN:
        return None
    if len(value) > _LENGTH and (version == "00" or value[_LENGTH] != "-"):
        return None
    return trace, parent
