"""Output formats and the small text helpers every view uses. Pure: strings in, strings out.

`-o json` and `-o yaml` print the API's objects exactly (no renaming, no dropped fields), so a
script can rely on the REST API's documentation; `-o table` is for people and may change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import yaml


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


def dump(obj: Any, output: Output) -> str:
    """`obj` as JSON or YAML text, ending in a newline."""
    if output is Output.YAML:
        return str(yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by three spaces, like `kubectl get`."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp from the API (UTC with `Z`), or None when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def span(seconds: int) -> str:
    """The two largest units, dropping a zero second unit: 7199 → `1h59m`, 7200 → `2h`."""
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    parts: list[str] = []
    for suffix, size in units:
        count, seconds = divmod(seconds, size)
        if count or parts:
            parts.append(f"{count}{suffix}")
        if len(parts) == 2:
            break
    parts = parts[:1] + [p for p in parts[1:] if not p.startswith("0")]
    return "".join(parts) or "0s"


def relative(when: object, *, now: datetime) -> str:
    """`in 1h59m`, `3m ago` or `-`; whole seconds are rounded towards zero."""
    moment = parse_time(when)
    if moment is None:
        return "-"
    seconds = int((moment - now).total_seconds())
    return f"in {span(seconds)}" if seconds >= 0 else f"{span(-seconds)} ago"


def timestamp(when: object) -> str:
    """A timestamp to the second (`2025-01-02T03:04:05Z`), or `-`."""
    moment = parse_time(when)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def when(value: object, *, now: datetime) -> str:
    """`2025-01-02T03:04:05Z (in 1h59m)`."""
    if parse_time(value) is None:
        return "-"
    return f"{timestamp(value)} ({relative(value, now=now)})"


def labels(value: object) -> str:
    if not isinstance(value, Mapping) or not value:
        return "-"
    return ",".join(f"{text(key)}={text(item)}" for key, item in value.items())


def text(value: object) -> str:
    """A cell: `-` for null or empty, one printable line otherwise."""
    if value is None or value == "":
        return "-"
    return printable(" ".join(str(value).split()))


def printable(value: str) -> str:
    """`value` with every character a terminal would act on shown as an escape: server text
    (a fork's output in a message, a label) must not move the cursor, retitle the window or
    reorder the line (escape sequences, C1 controls, bidirectional overrides)."""
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() or c == "\n" else _escape(c) for c in value)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"
