"""`sandboxd serve` on a non-loopback host: refused with a reason unless explicitly allowed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.server import free_port, running_sandboxd


def serve(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
    return subprocess.run(
        [sys.executable, "-m", "sandboxd", "serve", "--port", str(free_port()), *args],
        env={**clean, "SANDBOXD_DATA_DIR": str(tmp_path / "data"), **(env or {})},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--host", "0.0.0.0"], {}), ([], {"SANDBOXD_HOST": "::"})],
)
def test_a_non_loopback_host_is_refused_before_anything_starts(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    done = serve(tmp_path, *args, env=env)

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "refusing to listen on" in done.stderr and "plain HTTP" in done.stderr
    assert "--insecure-listen" in done.stderr
    assert not (tmp_path / "data").exists()  # nothing was started or written


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--host", "0.0.0.0", "--insecure-listen"], {}),
        (["--host", "0.0.0.0"], {"SANDBOXD_INSECURE_LISTEN": "1"}),
    ],
)
def test_the_flag_or_its_variable_lets_it_listen_on_all_interfaces(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    with running_sandboxd(tmp_path / "data", args=args, env=env) as server:
        assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready"}
