"""The router's modules import one another in one direction only — imports made for types alone
(under TYPE_CHECKING) included: a circle is how the exchange came to hold the whole client
connection. (The import-linter contracts in pyproject.toml say the same for `lint-imports`.)"""

from __future__ import annotations

import grimp

PACKAGE = "sandboxd_router"


def test_the_router_has_no_import_circle() -> None:
    graph = grimp.build_graph(PACKAGE, exclude_type_checking_imports=False)
    imports = {
        module: graph.find_modules_directly_imported_by(module) & graph.modules
        for module in graph.modules
    }
    circles = [circle for module in sorted(imports) if (circle := _circle(imports, module))]
    assert not circles, "import circles: " + "; ".join(" → ".join(c) for c in circles)


def _circle(imports: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from `start` back to itself, if there is one (depth first)."""
    stack, seen = [(start, [start])], set()
    while stack:
        module, path = stack.pop()
        for imported in sorted(imports[module]):
            if imported == start:
                return [*path, start]
            if imported not in seen:
                seen.add(imported)
                stack.append((imported, [*path, imported]))
    return None
