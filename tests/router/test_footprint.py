"""What the router's processes import: every module imported is resident memory in both the
router and its telemetry process (a fork), so one they never use is memory for nothing."""

from __future__ import annotations

import json
import subprocess
import sys

# httpx's command-line client and what it brings: 5 MB resident, never run by the router
NEVER = ("httpx._main", "click", "rich", "pygments")
# httpx and its stack: 5.5 MB of the router's memory, for its two calls to the control plane
HTTPX = ("httpx", "httpcore", "anyio", "h11", "h2", "idna")


def imported() -> set[str]:
    # (a fresh interpreter: this one has imported much more. None in sys.modules is an import
    # refused, not a module)
    code = (
        "import json, sys\n"
        "import sandboxd_router.__main__, sandboxd_router.telemetry.__main__\n"
        "import sandboxd_router.report, sandboxd_router.watch\n"
        "print(json.dumps(sorted(m for m, v in sys.modules.items() if v is not None)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout))


def test_the_router_and_its_telemetry_process_import_no_command_line_client() -> None:
    modules = imported()
    for available in ("click", "rich", "pygments"):
        __import__(available)  # installed here: the test means something
    assert not [m for m in NEVER if m in modules]


def test_the_router_speaks_to_the_control_plane_without_httpx() -> None:
    modules = imported()
    for available in HTTPX:
        __import__(available)  # installed here (sandboxd's own dependencies)
    assert not [m for m in HTTPX if m in modules]
