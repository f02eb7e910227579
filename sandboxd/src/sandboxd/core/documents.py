"""YAML read within bounds, for the catalog (`sandboxd.yaml`) and anything else loaded as YAML.

PyYAML's safe loader builds an aliased node once and shares it, so a few hundred bytes of nested
aliases ("billion laughs") load at once and then cost without end in whatever walks the result
(validation, serialisation). Aliases stay allowed and are counted as they expand: more than
`MAX_NODES` values is refused. Nesting is bounded while composing (`MAX_DEPTH`), well before
Python's recursion limit would turn it into a RecursionError.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import Node

MAX_DEPTH = 64
MAX_NODES = 200_000


class DocumentError(ValueError):
    """The document is over a bound; the message says which."""


class _Loader(yaml.SafeLoader):
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
    """The document in `text`. Raises DocumentError (over a bound) or yaml.YAMLError."""
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    _count(data)
    return data


def _count(data: Any) -> None:
    """Walk `data` as a reader would, every alias expanded, and stop past `MAX_NODES`."""
    stack = [data]
    seen = 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise DocumentError(
                f"more than {MAX_NODES} values once YAML aliases are expanded (an alias bomb?)"
            )
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
