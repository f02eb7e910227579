"""The router's mypyc build type-checks the hot modules and every module they import, in an
isolated environment that holds only `[build-system] requires` (router/pyproject.toml): a
third-party import there that the list lacks fails the README's install line and the image
build. This is the quick guard for that; tests/packaging/test_install.py is the slow proof."""

from __future__ import annotations

import ast
import configparser
import re
import sys
import tomllib
from pathlib import Path

from sandboxd_router import native

ROUTER = Path(__file__).resolve().parents[2] / "router"
PACKAGE_DIR = ROUTER / "src" / native.PACKAGE


def test_build_requirements_cover_what_the_compiled_modules_import() -> None:
    build = tomllib.loads((ROUTER / "pyproject.toml").read_text())["build-system"]["requires"]
    listed = {_name(requirement) for requirement in build}
    imported = {_name(module) for module in _third_party_imports(native.HOT)}
    assert imported <= listed, (
        f"add to router/pyproject.toml [build-system] requires: {imported - listed}"
    )


def test_the_build_reads_its_own_mypy_configuration() -> None:
    """The repository root's [tool.mypy] names plugins (pydantic.mypy) an isolated build does
    not have; the build's own file names none."""
    assert "--config-file" in (ROUTER / "setup.py").read_text()
    config = configparser.ConfigParser()
    config.read(ROUTER / "mypyc.ini")
    assert config.getboolean("mypy", "strict")
    assert "plugins" not in config["mypy"]


def _third_party_imports(hot: tuple[str, ...]) -> set[str]:
    """Top-level names of what the hot modules import, following the package's own modules
    as mypy does."""
    seen: set[str] = set()
    found: set[str] = set()
    todo = list(hot)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for module in _imports(native.source(PACKAGE_DIR, name)):
            top, _, rest = module.partition(".")
            if top == native.PACKAGE:
                # `from sandboxd_router.telemetry import x`: maybe module telemetry.x
                todo += [m for m in _modules_named(rest) if native.source(PACKAGE_DIR, m).is_file()]
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.add(top)
    return found


def _modules_named(dotted: str) -> list[str]:
    """The package's modules an import of `dotted` (under the package) may load: each
    leading part ("telemetry", "telemetry.ring", "telemetry.ring.RingReader")."""
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _imports(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules += [f"{node.module}.{alias.name}" for alias in node.names]
    return modules


def _name(requirement: str) -> str:
    """A distribution's or an import's name, normalized (PEP 503)."""
    head = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert head, requirement
    return re.sub(r"[-_.]+", "-", head.group(0)).lower()
