"""Durations as people write them in specs and on the command line: `90s`, `30m`, `2h`, `3d`.

Only ASCII digits and spaces count: `int()` and `\\d` would also take Arabic-Indic or
full-width digits (U+0662, U+FF12), which no one means as a TTL. Every duration is bounded
(`MAX_SECONDS`), so whatever is parsed can be spelt again by `format_duration` and parsed back:
a cap such as the server's TTL limit is then checked on a number, never on a crash.
"""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^[ \t]*([0-9]{1,12})[ \t]*([smhd]?)[ \t]*$", re.ASCII)
MAX_SECONDS = 36_500 * 86_400
"""About a hundred years: longer than any cap, short enough to stay a plain number."""
PATTERN = r"^[ \t]*0*[1-9][0-9]{0,11}[ \t]*[smhd]?[ \t]*$"
"""What `parse_duration` can accept, as a JSON Schema pattern (for the OpenAPI document)."""


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
                f"{value[:40]!r} is not a duration: use a number (ASCII digits) with a unit "
                "s, m, h or d, such as 2h"
            )
        seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    if seconds > MAX_SECONDS:
        raise ValueError(f"a duration must be at most {MAX_SECONDS // 86_400}d")
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest exact spelling: 7200 → `2h`, 5400 → `90m`, 61 → `61s`."""
    for unit in ("d", "h", "m"):
        size = _UNITS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
