"""`sandboxd serve --runtime kubernetes` checks its cluster before serving, through the
runtime's own check: one line and exit code 2 when it cannot be used, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.server import free_port


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
    return subprocess.run(
        [sys.executable, "-m", "sandboxd", "serve", "--port", str(free_port()),
         "--runtime", "kubernetes", *args],
        env={**clean, "SANDBOXD_DATA_DIR": str(tmp_path / "data")},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_cluster_that_does_not_answer_stops_the_start_with_one_line(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))  # fmt: skip
    done = serve(tmp_path, "--kubeconfig", str(kubeconfig))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("sandboxd: cannot use the Kubernetes API: Unreachable: GET ")


def test_a_kubeconfig_that_cannot_be_read_stops_the_start_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.kubeconfig"
    done = serve(tmp_path, "--kubeconfig", str(missing))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        == f"sandboxd: {missing}: cannot read the kubeconfig: No such file or directory"
    )
