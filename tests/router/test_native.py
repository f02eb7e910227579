"""The router's hot path runs compiled (mypyc), and never from a build older than its sources."""

from __future__ import annotations

import importlib.machinery
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

import sandboxd_router
from sandboxd_router import native
from tests.router.conftest import Origin, Router

PROBE = """
import importlib, json
from sandboxd_router import native
mods = {n: importlib.import_module("sandboxd_router." + n).__file__ for n in native.HOT}
print(json.dumps({"mode": native.mode, "files": mods}))
"""


ROUTER_DIR = Path(__file__).resolve().parents[2] / "router"


def _is_extension(path: str) -> bool:
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def _copy_build(tmp: Path) -> Path:
    """The installed package and the group's shared library, as the build left them."""
    package = Path(sandboxd_router.__file__).parent
    dest = tmp / "src"
    shutil.copytree(package, dest / "sandboxd_router", ignore=shutil.ignore_patterns("__pycache__"))
    for lib in package.parent.glob(f"{native.PACKAGE}__mypyc*"):
        shutil.copy2(lib, dest / lib.name)
    return dest


def _probe(src: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _run(src: Path, code: str) -> str:
    """What `code` prints, run with `src` first on the path."""
    done = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(src)},
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


STORE_PROBE = "from sandboxd_router.record import Recorder; print(Recorder(8)._store is not None)"
"""Whether the recorder writes plain records with the C store."""


def test_the_installed_hot_path_is_compiled() -> None:
    """What the tests and benchmarks exercise is the compiled build (scripts/setup builds it)."""
    assert native.mode == "compiled"
    from sandboxd_router import downstream, exchange

    assert _is_extension(str(exchange.__file__)) and _is_extension(str(downstream.__file__))


def test_a_copy_of_the_build_loads_compiled(tmp_path: Path) -> None:
    got = _probe(_copy_build(tmp_path))
    assert got["mode"] == "compiled"
    files = got["files"]
    assert isinstance(files, dict) and set(files) == set(native.HOT)
    assert all(_is_extension(f) and f.startswith(str(tmp_path)) for f in files.values())


def _edited(tmp_path: Path, name: str, addition: str) -> tuple[Path, dict[str, object]]:
    """A copy of the build with `addition` appended to its source `name`, and what it runs:
    every hot module from its source (compiled ones call each other directly: never a mix)."""
    src = _copy_build(tmp_path)
    edited = src / "sandboxd_router" / name
    edited.write_text(edited.read_text() + addition)
    got = _probe(src)
    assert got["mode"] == f"interpreted: {name} changed since the build (rebuild: scripts/setup)"
    files = got["files"]
    assert isinstance(files, dict) and all(f.endswith(".py") for f in files.values())
    return src, got


def test_an_edited_source_runs_as_written_not_the_stale_build(tmp_path: Path) -> None:
    src, _ = _edited(tmp_path, "exchange.py", "\nEDITED = True\n")
    assert _run(src, "from sandboxd_router import exchange; print(exchange.EDITED)") == "True"


def test_an_edited_c_source_makes_the_whole_build_unused(tmp_path: Path) -> None:
    """The C writer of plain records is checked as the compiled modules are: edited after the
    build, nothing compiled runs (and the recorder writes every record in Python)."""
    src, _ = _edited(tmp_path, "_ringstore.c", "\n/* edited */\n")
    assert _run(src, STORE_PROBE) == "False"


def test_another_builds_shared_library_first_on_the_path_is_not_used(tmp_path: Path) -> None:
    """The compiled modules import the group's library by name: if the first one on the path is
    not the one built with them (here: the copy lacks its own, the tree's comes next), they
    would run another build's code."""
    src = _copy_build(tmp_path)
    for lib in src.glob(f"{native.PACKAGE}__mypyc*"):
        lib.unlink()
    got = _probe(src)
    assert str(got["mode"]).startswith(
        f"interpreted: the first {native.PACKAGE}__mypyc on the path is not this build's"
    )


def test_without_a_manifest_the_package_is_plain_python(tmp_path: Path) -> None:
    src = _copy_build(tmp_path)
    (src / "sandboxd_router" / native.MANIFEST).unlink()
    for built in src.rglob("*"):
        if _is_extension(str(built)):
            built.unlink()
    got = _probe(src)
    assert got["mode"] == "interpreted: not compiled (no complete mypyc build here)"


TELEMETRY_PROBE = """
import asyncio, hashlib, os, sys, tempfile, time
from random import Random
import orjson
from sandboxd_router import native
from sandboxd_router.faults import Fault
from sandboxd_router.record import Recorder
from sandboxd_router.telemetry.accesslog import AccessLogSink
from sandboxd_router.telemetry.prometheus import PrometheusSink
from sandboxd_router.telemetry.ring import RingReader
from sandboxd_router.telemetry.signals import SignalsSink

clock = iter(range(10**9))
time.perf_counter = lambda: 1000 + next(clock) / 997  # the same records in every run
time.time = lambda: 1765000000.0
recorder = Recorder(1 << 12, store=False)  # (the C store reads the real clock: test_ringstore)
names_r, names_w = os.pipe()
start = recorder.attach(names_w)
rng = Random(5)
for n in range(3000):
    raw = {"id": f"slow-{n % 3}", "service": "svc-0", "kind": "latency", "latencyMs": 1}
    faults = [Fault(f"pr-{n % 50}", raw)] if n % 7 == 0 else None
    ids = recorder.ids(f"svc-{n % 3}", f"pr-{n % 50}", f"key-{n % 50}" if n % 5 else "")
    recorder.write(time.perf_counter() - rng.random() / 10, ids, n % 2 == 0, b"POST" if n % 4 else b"GET",
                   (200, 404, 502, 0)[n % 4], n, 3 * n, b"00-%032x-%016x-01" % (n + 1, n + 2),
                   n % 5, faults, 0.001, b"tools/call" if n % 3 == 0 else None,
                   b"tool-%d" % (n % 4) if n % 3 == 0 else None, b'"id-%d"' % n,
                   b"/p/%d" % n, b"s%d" % (n % 9) if n % 2 else None,
                   -32000 - n % 3 if n % 5 == 2 else None, b"2025-06-18" if n % 3 == 0 else None)
reader = RingReader(recorder.fd, names_r, start)
fields = []
log = tempfile.NamedTemporaryFile(delete=False).name
access = AccessLogSink(log)
signals = SignalsSink(url="http://127.0.0.1:9", token="t", rng=Random(7))
prometheus = PrometheusSink()
while batch := reader.read():
    fields += [o.fields() for o in batch]
    access.add_all(batch)
    signals.add_all(batch)
    for o in batch:
        prometheus.add(o)
asyncio.run(access.close())
buckets, requests = signals.outbox()
for r in requests:
    del r["spanId"]  # (random per process)
digest = hashlib.sha256(open(log, "rb").read() + orjson.dumps([buckets, requests, fields])
                        + prometheus.render()).hexdigest()
print(native.mode.split(":")[0], digest, len(requests))
"""


def test_the_telemetry_compiled_and_from_its_sources_writes_the_same(tmp_path: Path) -> None:
    """The access log, the signals and the Prometheus counters of the same records, from the
    compiled build and from the sources (the build's fallback) are the same, byte for byte."""
    compiled = _copy_build(tmp_path / "compiled")
    interpreted = _copy_build(tmp_path / "interpreted")
    (interpreted / "sandboxd_router" / native.MANIFEST).unlink()
    got = [
        subprocess.run(
            [sys.executable, "-c", TELEMETRY_PROBE],
            env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for src in (compiled, interpreted)
    ]
    assert [mode for mode, _, _ in got] == ["compiled", "interpreted"]
    assert got[0][1:] == got[1][1:] and int(got[0][2]) > 1000


def test_healthz_and_the_log_say_which_build_runs(
    router: Router, origins: dict[str, Origin]
) -> None:
    health = httpx.get(f"http://127.0.0.1:{router.admin}/healthz").json()
    assert health["hotPath"] == "compiled"
    err = router.log.with_name("router.err").read_text()
    assert "hot path: compiled (mypyc)" in err


@pytest.mark.slow
def test_a_wheel_carries_the_compiled_build(tmp_path: Path) -> None:
    """What `pip install ./router` (the container image) gets: the modules, the shared library
    and the manifest, so that an installed router runs compiled too."""
    src = tmp_path / "router"
    skip = ("*.so", "_compiled.json", "build", "*.egg-info", "__pycache__")
    shutil.copytree(ROUTER_DIR, src, ignore=shutil.ignore_patterns(*skip))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [
            *pip,
            "wheel",
            "--no-build-isolation",
            "--no-deps",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        check=True,
        timeout=600,
    )
    (wheel,) = (tmp_path / "dist").glob("sandboxd_router-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert f"sandboxd_router/{native.MANIFEST}" in names
    assert any(n.startswith(f"{native.PACKAGE}__mypyc") for n in names)
    for name in native.C_MODULES:  # the extension, and its source (checked at import)
        assert f"sandboxd_router/{name}.c" in names
        assert any(n.startswith(f"sandboxd_router/{name}.") and _is_extension(n) for n in names)
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    got = _probe(site)
    assert got["mode"] == "compiled"
    files = got["files"]
    assert isinstance(files, dict)
    assert all(_is_extension(f) and f.startswith(str(site)) for f in files.values())
    assert _run(site, STORE_PROBE) == "True"
