"""The install paths a new user and the image take, in fresh virtual environments, with build
isolation (pip fetches each distribution's build requirements, as on any machine): the
README's install line, wheels as the Dockerfile builds them, and the compiled router surviving
builds attempted beside it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_LEFTOVERS = shutil.ignore_patterns(
    "*.so", "_compiled.json", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache"
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_readme_install_line_then_wheels_as_the_image_builds_them(tmp_path: Path) -> None:
    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.fail("no C compiler: the router's hot path cannot compile (apt-get install gcc)")
    tree = _copy_of_the_repository(tmp_path / "src")
    dev = _venv(tmp_path / "dev")

    _run([str(dev / "pip"), *_readme_install_line()[1:]], cwd=tree)
    assert _router_mode(dev) == "compiled"

    # The image installs wheels of the three folders; building them leaves the tree compiled.
    assert "./router" in (ROOT / "docker" / "sandboxd.Dockerfile").read_text()
    _run([str(dev / "pip"), "wheel", "--no-deps", "-w", "dist", "./sandboxd", "./router", "./cli"],
         cwd=tree)  # fmt: skip
    assert _router_mode(dev) == "compiled", "a wheel build downgraded the editable router"

    # A build that fails to compile (no working compiler) keeps the working build too.
    _run([str(dev / "pip"), "install", "-e", "./router"], cwd=tree, env={"CC": "false"})
    assert _router_mode(dev) == "compiled", "a failed build downgraded the editable router"

    app = _venv(tmp_path / "app")
    wheels = sorted(str(p) for p in (tree / "dist").glob("*.whl"))
    assert len(wheels) == 3, wheels
    _run([str(app / "pip"), "install", *wheels], cwd=tmp_path)
    assert _router_mode(app) == "compiled"
    for script in ("sandboxd", "sandboxd-router", "sandbox"):
        _run([str(app / script), "--help"], cwd=tmp_path)


def _readme_install_line() -> list[str]:
    """`pip install -e …` exactly as the README's Install section shows it."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^\$ (pip install -e [^#\n]*?)\s*(#.*)?$", readme, re.M)
    assert match, "the README shows no `pip install -e` line"
    return match.group(1).split()


def _copy_of_the_repository(dest: Path) -> Path:
    """The three distributions without this checkout's build outputs (a clean clone's view;
    building in the checkout itself would replace the compiled router other tests run)."""
    for folder in ("sandboxd", "router", "cli"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=BUILD_LEFTOVERS)
    return dest


def _venv(path: Path) -> Path:
    _run([sys.executable, "-m", "venv", str(path)], cwd=path.parent)
    return path / "bin"


def _router_mode(bin_dir: Path) -> str:
    code = "import sandboxd_router.native as n, sandboxd_router.client; print(n.mode)"
    out = _run([str(bin_dir / "python"), "-c", code], cwd=Path("/"))
    return out.strip()


def _run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout
