"""Another build of the router to measure beside the tree's own, in the same run.

`built_at(ref)` compiles the router of a git ref with mypyc, as its own wheel, from a copy of
that ref's `router/` (`git archive`: no worktree, nothing left behind) and with this
virtualenv's build tools (the same mypy as the tree's build), and unpacks it into a directory
to put first on PYTHONPATH: the router then runs from it, with this virtualenv's dependencies.
`from_venv(dir)` instead runs the router installed in another virtualenv, as it is.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from benchmarks._procs import HarnessError

ROOT = Path(__file__).resolve().parents[1]


def built_at(ref: str, work_dir: Path) -> Path:
    """A directory holding the router of `ref`, compiled; raises HarnessError if it cannot."""
    commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}").decode().strip()
    source = work_dir / f"router-{commit[:12]}"
    with tarfile.open(fileobj=io.BytesIO(_git("archive", commit, "router"))) as archive:
        archive.extractall(source, filter="data")
    dist, site = source / "dist", source / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(dist), str(source / "router")],
        capture_output=True, text=True,
    )  # fmt: skip
    wheels = list(dist.glob("sandboxd_router-*.whl"))
    if build.returncode != 0 or not wheels:
        raise HarnessError(f"cannot build the router of {ref}:\n{build.stdout}{build.stderr}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(site)
    return site


def from_venv(venv: Path) -> str:
    """The interpreter of another virtualenv that has the router installed."""
    python = venv / "bin" / "python"
    if not python.exists():
        raise HarnessError(f"{venv} is not a virtualenv (no bin/python)")
    return str(python)


def _git(*args: str) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True)
        return done.stdout
    except subprocess.CalledProcessError as e:
        raise HarnessError(f"git {' '.join(args)}: {e.stderr.decode().strip()}") from e
