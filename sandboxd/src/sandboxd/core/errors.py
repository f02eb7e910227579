"""Readable validation messages: pydantic's error list as `field.path: what is wrong` lines."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def field_path(loc: Sequence[int | str]) -> str:
    """`("forks", 0, "service")` → `forks[0].service`; FastAPI's leading `body` is dropped."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(root)"


def describe(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One `{field, problem}` per pydantic error, with pydantic's 'Value error, ' prefix removed."""
    out = []
    for error in errors:
        message = str(error.get("msg", "invalid"))
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        # A model's own check can name a field below it (`sandboxd.core.faults.problem`).
        below = (error.get("ctx") or {}).get("at", ())
        loc = (*error.get("loc", ()), *below)
        out.append({"field": field_path(loc), "problem": message})
    return out


def one_line(problems: Sequence[Mapping[str, str]]) -> str:
    return "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
