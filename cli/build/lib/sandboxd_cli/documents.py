"""Reading a spec document (YAML or JSON) as plain JSON data, within bounds.

A spec comes from a pull request, so it is read as hostile input:

- YAML aliases are allowed (an `env` block shared by two forks is reasonable) but counted as
  they expand: PyYAML builds an aliased node once and shares it, so a 350-byte "billion laughs"
  loads at once and then grows without end when serialised. Every document is walked as it
  would be sent, and more than `MAX_NODES` values is refused.
- Nesting is bounded (`MAX_DEPTH`) while composing, before Python's recursion limit is near.
- Only JSON's types pass: YAML's implicit timestamps stay the text written (`2024-01-01` is a
  label value, not a date), and explicit tags that make other types (`!!binary`, `!!set`,
  `!!timestamp`) or a non-finite number are refused with the path of the value.
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml
from yaml.nodes import Node

MAX_DEPTH = 64
MAX_NODES = 100_000
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class DocumentError(ValueError):
    """The document cannot be read as a spec; the message says where and why."""


class _Loader(yaml.SafeLoader):
    """The safe loader, without implicit timestamps and with a bound on nesting."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise DocumentError(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str) -> Any:
    """The YAML document in `text` as JSON data. Raises DocumentError or yaml.YAMLError."""
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    check(data)
    return data


def load_json(text: str) -> Any:
    """The JSON document in `text`, held to the same bounds. Raises DocumentError/ValueError."""
    try:
        data = json.loads(text)
    except RecursionError as e:
        raise DocumentError(f"nested more than {MAX_DEPTH} levels deep") from e
    check(data)
    return data


def check(data: Any) -> None:
    """Refuse what JSON cannot carry, or more than the bounds allow, counting every alias."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    seen = 0
    while stack:
        value, path, depth = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise DocumentError(
                f"more than {MAX_NODES} values once YAML aliases are expanded (an alias bomb?)"
            )
        if depth > MAX_DEPTH:
            raise DocumentError(f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise DocumentError(f"{_at(path)}key {key!r} is not text: quote it")
                stack.append((item, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise DocumentError(f"{_at(path)}{value} is not a finite number")
        elif value is not None and not isinstance(value, str | int | float):
            kind = type(value).__name__
            raise DocumentError(f"{_at(path)}a {kind} value is not allowed in a spec: quote it")


def _at(path: str) -> str:
    return f"`{path}`: " if path else ""
