"""The install paths a new user and the image take, in fresh virtual environments with build
isolation (pip fetches each distribution's build requirements, as on any machine):

- the README's install line, exactly as written, from a copy of the repository's root;
- the image's wheels, built by the Dockerfile's own `pip wheel` line beside that editable
  install (which must stay compiled: a build attempted from the tree never downgrades it), and
  installed by the Dockerfile's own `pip install --no-index` line into another fresh venv, where
  the router runs compiled and the three console scripts start.

The steps share two venvs (module fixtures), so the whole file takes about two minutes here.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest

from tests.support import poll
from tests.support.server import free_port
from tests.unit.test_compose import instructions

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "sandboxd.Dockerfile"
IMAGE_WHEELS = "/wheels"  # where the Dockerfile's wheels stage puts them
# A fresh clone's view: the root's configuration (whose mypy plugins the router's build must not
# read) and the three distributions, without this checkout's build outputs.
CLONE = ("pyproject.toml", "README.md", "sandboxd", "router", "cli")
BUILD_OUTPUTS = shutil.ignore_patterns(
    "*.so", "_compiled.json", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache"
)
SCRIPTS = ("sandboxd", "sandboxd-router", "sandbox")
PROBE = """
import importlib, json
from sandboxd_router import native
files = [importlib.import_module(f"{native.PACKAGE}.{m}").__file__ for m in native.HOT]
print(json.dumps({"mode": native.mode, "files": files}))
"""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("clone")
    for name in CLONE:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name, ignore=BUILD_OUTPUTS)
        else:
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def dev(tree: Path) -> Path:
    """A fresh venv where the README's install line ran from the repository's root."""
    missing = _build_prerequisite_missing()
    if missing:
        pytest.fail(f"the router's hot path cannot compile here: {missing}")
    bin_dir = _venv(tree.parent / "dev")
    _run([str(bin_dir / "pip"), *_readme_install_line()[1:]], cwd=tree)
    return bin_dir


@pytest.fixture(scope="module")
def wheels(tree: Path, dev: Path) -> Path:
    """The image's wheels, built by the Dockerfile's line beside the editable install."""
    out = tree.parent / "wheels"
    argv = _dockerfile_command("pip wheel", wheels=out)
    _run([str(dev / "pip"), *argv[1:]], cwd=tree)
    return out


def test_the_readme_install_line_installs_a_compiled_router(dev: Path) -> None:
    assert _router_mode(dev) == "compiled"


def test_building_the_image_wheels_leaves_the_editable_router_compiled(
    dev: Path, wheels: Path
) -> None:
    built = sorted(p.name.split("-")[0] for p in wheels.glob("sandboxd*.whl"))
    assert built == ["sandboxd", "sandboxd_cli", "sandboxd_router"]
    assert _router_mode(dev) == "compiled", "a wheel build downgraded the editable router"


def test_a_build_that_fails_to_compile_leaves_the_editable_router_compiled(
    tree: Path, dev: Path
) -> None:
    done = _run(
        [str(dev / "pip"), "install", "-v", "-e", "./router"], cwd=tree, env={"CC": "false"}
    )
    assert "sandboxd-router: not compiled" in done.stdout + done.stderr  # it did fail to compile
    assert _router_mode(dev) == "compiled", "a failed build downgraded the editable router"


def test_the_image_wheels_install_into_a_fresh_venv_and_run_compiled(
    wheels: Path, tmp_path: Path
) -> None:
    app = _venv(tmp_path / "app")
    argv = _dockerfile_command("pip install --no-index", wheels=wheels)
    _run([str(app / "pip"), *argv[1:]], cwd=tmp_path)

    assert _router_mode(app) == "compiled"
    for script in SCRIPTS:
        _run([str(app / script), "--help"], cwd=tmp_path)
    assert _healthz(app, tmp_path)["hotPath"] == "compiled"


def _build_prerequisite_missing() -> str | None:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc.split()[0]) is None:
        return f"no C compiler ({cc}; Debian: apt-get install gcc)"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        return f"no Python headers ({headers}; Debian: apt-get install python3.11-dev)"
    return None


def _readme_install_line() -> list[str]:
    """`pip install -e …` exactly as the README's Install section shows it."""
    lines = (ROOT / "README.md").read_text().splitlines()
    found = [ln.removeprefix("$ ") for ln in lines if ln.startswith("$ pip install -e ")]
    assert len(found) == 1, f"the README shows {len(found)} `$ pip install -e` lines: {found}"
    return shlex.split(found[0], comments=True)


def _dockerfile_command(prefix: str, *, wheels: Path) -> list[str]:
    """The one RUN command of the Dockerfile that starts with `prefix` (after RUN's own
    --flags), with the image's wheel directory replaced by `wheels`."""
    found = []
    for keyword, arguments in instructions(DOCKERFILE.read_text()):
        words = shlex.split(arguments) if keyword == "RUN" else []
        argv = [w for w in words if not w.startswith("--mount=")]
        if " ".join(argv).startswith(prefix):
            found.append([str(wheels) if w == IMAGE_WHEELS else w for w in argv])
    assert len(found) == 1, f"{DOCKERFILE.name}: {len(found)} RUN lines start with `{prefix}`"
    return found[0]


def _venv(path: Path) -> Path:
    _run([sys.executable, "-m", "venv", str(path)], cwd=path.parent)
    return path / "bin"


def _router_mode(bin_dir: Path) -> str:
    """The installed router's own verdict, after importing every hot module from outside the
    tree (so the installed package, not a source folder, answers)."""
    got = json.loads(_run([str(bin_dir / "python"), "-c", PROBE], cwd=Path("/")).stdout)
    if got["mode"] == "compiled":
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        assert all(f.endswith(suffix) for f in got["files"]), got["files"]
    return str(got["mode"])


def _healthz(bin_dir: Path, tmp: Path) -> dict[str, object]:
    """GET /healthz of the installed `sandboxd-router` on a static one-service table."""
    port, admin = free_port(), free_port()
    table = {
        "baggageKey": "sandbox",
        "services": [
            {
                "name": "echo",
                "protocol": "http",
                "routerPort": port,
                "baseline": "http://127.0.0.1:9",
            }
        ],
        "routes": {},
        "version": "test",
    }
    (tmp / "routes.json").write_text(json.dumps(table))
    argv = [str(bin_dir / "sandboxd-router"), "--routes-file", str(tmp / "routes.json")]
    proc = subprocess.Popen([*argv, "--admin-port", str(admin), "--access-log", "off"])
    try:
        poll.port_open(admin, timeout=15)
        health: dict[str, object] = httpx.get(f"http://127.0.0.1:{admin}/healthz").json()
        return health
    finally:
        proc.terminate()
        proc.wait()


def _run(
    argv: list[str], *, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{shlex.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return done
