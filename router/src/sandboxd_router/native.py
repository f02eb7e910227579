"""Which build of the hot path runs: mypyc-compiled, or the plain Python sources.

The modules in `HOT` are compiled with mypyc when the distribution is built (router/setup.py):
about 45 % fewer instructions per proxied request than interpreted (callgrind, see the README).
The build records a digest of each source it compiled (`_compiled.json`). At import the package
checks that every compiled module is present and built from the sources beside it; if any is
missing or stale (a source edited after the build), all of `HOT` load from their sources instead
— never a mix, since compiled modules call each other directly — so an edit always takes effect,
only slower until the next build (`scripts/setup` rebuilds when a source changes).

This module itself is never compiled (setup.py reads `HOT` from it) and imports only the stdlib.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PACKAGE = "sandboxd_router"
HOT = (
    "baggage",
    "boundary",
    "cork",
    "downstream",
    "exchange",
    "faults",
    "headers",
    "intake",
    "mcp",
    "preview",
    "record",
    "responses",
    "rewrite",
    "routing",
    "stall",
    "state",
    "table",
    "upstream",
    # the telemetry process's per-request work (never imported by the router's own process)
    "telemetry.accesslog",
    "telemetry.buckets",
    "telemetry.counters",
    "telemetry.observed",
    "telemetry.otlpwire",
    "telemetry.request_wire",
    "telemetry.ring",
    "telemetry.spans",
    "telemetry.tally",
    "telemetry.thousandths",
    "telemetry.traceparent",
)
C_MODULES = ("_ringstore",)
"""Extensions written in C (`sandboxd_router/<name>.c`), built with `HOT` and checked alike:
used only when the build runs compiled (`record.native_store`)."""
MANIFEST = "_compiled.json"
_HERE = Path(__file__).resolve().parent

mode = "interpreted"
""""compiled", or "interpreted" followed by the reason (set once, by `select()`)."""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source(package_dir: Path, name: str) -> Path:
    """The source of the hot module `name` ("record", "telemetry.ring")."""
    return package_dir.joinpath(*name.split(".")).with_suffix(".py")


def compiled_sources(package_dir: Path) -> dict[str, Path]:
    """Every compiled module's source, by name: `HOT`'s .py files, then `C_MODULES`' .c ones
    (each built beside its source, as `<name>.<extension suffix>`)."""
    sources = {name: source(package_dir, name) for name in HOT}
    sources.update({name: package_dir / f"{name}.c" for name in C_MODULES})
    return sources


def built_sources(package_dir: Path) -> dict[str, str]:
    """What a build records (`write_manifest`): each compiled module's source digest, by
    name."""
    return {name: digest(path) for name, path in compiled_sources(package_dir).items()}


def write_manifest(directory: Path, sources: dict[str, str]) -> None:
    """Record the digests of the sources just compiled (called by the build, once it has
    built every module)."""
    (directory / MANIFEST).write_text(json.dumps(sources, indent=2, sort_keys=True) + "\n")


def _problem(package_dir: Path) -> str | None:
    """Why the compiled modules cannot be used, or None if they can."""
    try:
        built = json.loads((package_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return "not compiled (no complete mypyc build here)"
    except (OSError, ValueError) as e:
        return f"unreadable {MANIFEST}: {e}"
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    shared = f"{PACKAGE}__mypyc"  # the group's one library, which the modules import by name
    spec = importlib.util.find_spec(shared)
    if spec is None or spec.origin is None:
        return f"the compiled library {shared} is missing"
    if Path(spec.origin).resolve().parent != package_dir.parent.resolve():
        return f"the first {shared} on the path is not this build's ({spec.origin})"
    for name, path in compiled_sources(package_dir).items():
        if not any(path.with_suffix(s).exists() for s in suffixes):
            return f"the compiled {name} module is missing"
        if built.get(name) != digest(path):
            changed = path.relative_to(package_dir)
            return f"{changed} changed since the build (rebuild: scripts/setup)"
    return None


class _Sources(importlib.abc.MetaPathFinder):
    """Loads `HOT` from their .py files even where a compiled module sits beside them."""

    def __init__(self, package_dir: Path) -> None:
        self.package_dir = package_dir

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.partition(".")
        if package != PACKAGE or name not in HOT:
            return None
        return importlib.util.spec_from_file_location(fullname, source(self.package_dir, name))


def select(package_dir: Path = _HERE) -> str:
    """Decide once, before any hot module is imported; returns (and sets) `mode`."""
    global mode
    if any(isinstance(finder, _Sources) for finder in sys.meta_path):
        return mode  # decided already (the package was reloaded)
    problem = _problem(package_dir)
    if problem is None:
        mode = "compiled"
    else:
        mode = f"interpreted: {problem}"
        if any(f"{PACKAGE}.{name}" in sys.modules for name in HOT):
            raise ImportError(f"{PACKAGE}: select() must run before its hot modules load")
        sys.meta_path.insert(0, _Sources(package_dir))
    return mode
