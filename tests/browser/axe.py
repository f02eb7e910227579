"""axe-core, the accessibility engine the browser tests inject: fetched once from the npm
registry (`npm pack`, which checks the registry's integrity hash) into
~/.cache/sandboxd/axe-core/<version>/axe.min.js."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

VERSION = "4.14.1"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sandboxd" / "axe-core" / VERSION


def script(*, timeout: float = 120) -> Path:
    """The path of axe.min.js, packed from the registry unless already cached."""
    target = cache_dir() / "axe.min.js"
    if target.exists():
        return target
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            "the accessibility test needs npm on PATH to fetch axe-core from the npm registry",
            pytrace=False,
        )
    staging = cache_dir().with_name(f"{VERSION}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    packed = subprocess.run(
        [npm, "pack", f"axe-core@{VERSION}", "--pack-destination", str(staging), "--silent"],
        capture_output=True, text=True, timeout=timeout, check=False, cwd=staging,
    )  # fmt: skip
    if packed.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(f"npm pack axe-core@{VERSION} failed:\n{packed.stdout}\n{packed.stderr}")
    with tarfile.open(staging / f"axe-core-{VERSION}.tgz") as tar:
        member = tar.extractfile("package/axe.min.js")
        assert member is not None, "axe-core's package has no axe.min.js"
        (staging / "axe.min.js").write_bytes(member.read())
    cache_dir().mkdir(parents=True, exist_ok=True)
    os.replace(staging / "axe.min.js", target)  # atomic: a concurrent run sees all or nothing
    shutil.rmtree(staging, ignore_errors=True)
    return target
