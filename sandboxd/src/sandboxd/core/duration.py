"""Durations as people write them in specs and on the command line: `90s`, `30m`, `2h`, `3d`."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d{1,9})\s*([smhd]?)\s*$")


def parse_duration(value: str | int) -> int:
    """Seconds in `value`; a bare number means seconds. Raises ValueError with a readable reason."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number with a unit (s, m, h, d), such as 2h")
    if isinstance(value, int):
        seconds = value
    else:
        match = _DURATION.fullmatch(value)
        if match is None:
            raise ValueError(
                f"{value!r} is not a duration: use a number with a unit s, m, h or d, such as 2h"
            )
        seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest exact spelling: 7200 → `2h`, 5400 → `90m`, 61 → `61s`."""
    for unit in ("d", "h", "m"):
        size = _UNITS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
