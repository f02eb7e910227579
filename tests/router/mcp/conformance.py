"""The official MCP conformance suite (npm), installed once per lock file and run as a CLI.

`npm ci` installs tests/fixtures/mcp/package-lock.json into a cache directory keyed by the lock
file's hash (`$XDG_CACHE_HOME/sandboxd/mcp-npm/<hash>`, default `~/.cache`), so a fresh machine
installs it and later runs reuse it. The CLI (`conformance server --url … -o DIR`) writes one
directory per scenario, `server-<scenario>-<timestamp>/checks.json`, a list of checks whose
`status` is SUCCESS, FAILURE, WARNING or INFO; its exit code only says whether anything failed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.router.mcp.processes import FIXTURES

SCENARIO_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")


@dataclass(frozen=True)
class NpmFixtures:
    root: Path

    def bin(self, name: str) -> Path:
        return self.root / "node_modules" / ".bin" / name

    @property
    def undici(self) -> Path:
        return self.root / "node_modules" / "undici"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sandboxd" / "mcp-npm"


def install(*, timeout: float = 300) -> NpmFixtures:
    """`npm ci` the fixtures' lock file into the cache, unless that exact lock is installed."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.fail(
            "the MCP conformance tests need Node.js 20+ and npm on PATH (`node` and `npm` were not "
            "found): install them (e.g. `apt-get install nodejs npm`) and run the tests again",
            pytrace=False,
        )
    lock = FIXTURES / "package-lock.json"
    digest = hashlib.sha256(lock.read_bytes() + (FIXTURES / "package.json").read_bytes())
    target = cache_root() / digest.hexdigest()[:16]
    if (target / ".installed").exists():
        return NpmFixtures(target)
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copy(FIXTURES / "package.json", staging)
    shutil.copy(lock, staging)
    done = subprocess.run(
        [npm, "ci", "--prefix", str(staging), "--no-audit", "--no-fund"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(f"npm ci failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    (staging / ".installed").write_text(lock.name)
    try:
        staging.rename(target)
    except OSError:  # another run installed it first
        shutil.rmtree(staging, ignore_errors=True)
    return NpmFixtures(target)


Results = dict[str, dict[str, str]]
"""scenario → check id → status."""


def passed(results: Results) -> set[str]:
    """Scenarios with no failed check (the CLI's own ✓)."""
    return {name for name, checks in results.items() if "FAILURE" not in checks.values()}


def run_suite(
    npm: NpmFixtures,
    url: str,
    *,
    out_dir: Path,
    env: Mapping[str, str] | None = None,
    preload: Path | None = None,
    timeout: float = 90,
) -> Results:
    """Run the server suite against `url` and read every scenario's checks."""
    node = shutil.which("node")
    assert node is not None
    argv = [node, *(["--require", str(preload)] if preload else [])]
    argv += [str(npm.bin("conformance")), "server", "--url", url, "-o", str(out_dir)]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    results: Results = {}
    for checks_file in sorted(out_dir.glob("server-*/checks.json")):
        match = SCENARIO_DIR.match(checks_file.parent.name)
        assert match, checks_file
        checks = json.loads(checks_file.read_text())
        statuses = results.setdefault(match["scenario"], {})
        for index, check in enumerate(checks):
            key = check["id"] if check["id"] not in statuses else f"{check['id']}#{index}"
            statuses[key] = check["status"]
    if not results or "=== SUMMARY ===" not in done.stdout:
        raise AssertionError(
            f"the conformance CLI produced no results (exit {done.returncode}):\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return results


def describe(results: Results) -> str:
    """One line per scenario for failure messages: ✓/✗ name: failing checks."""
    lines = []
    for name, checks in sorted(results.items()):
        failing = sorted(check for check, status in checks.items() if status == "FAILURE")
        lines.append(
            f"{'✗' if failing else '✓'} {name}{': ' + ', '.join(failing) if failing else ''}"
        )
    return "\n".join(lines)
