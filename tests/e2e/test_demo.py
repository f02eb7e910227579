"""The README's first command, as a new user runs it: `scripts/demo --once` exits 0, with the
three outcomes of the reference system and its fault act, and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.procs import fork_pids
from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_demo_once_shows_the_three_outcomes_the_fault_act_and_cleans_up() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--once", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert "sandboxd-route: sandbox=fixed-agent" in result.stdout
    assert "no field 'lastState'" in result.stdout
    assert "get_logs was retried 2 times" in result.stdout
    assert "cluster-mcp describe_pod: answered invalid JSON" in result.stdout
    assert "fault-malformed: the agent fails visibly" in result.stdout
    assert "fixed-agent's preview link opens its agent's page" in result.stdout
    for name in ("schema-change", "fixed-agent", "fault-rate-limit", "fault-malformed"):
        assert fork_pids(sandbox=name) == []
