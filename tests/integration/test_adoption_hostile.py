"""A fork that lies in its markers cannot stop sandboxd from restarting: it is stopped and
logged, and the baselines and every honest fork carry on (adopted, not restarted)."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ENVSERVER, write_catalog
from tests.integration.conftest import wait_phase
from tests.support import poll
from tests.support.procs import alive
from tests.support.server import free_port, running_sandboxd

pytestmark = pytest.mark.slow
LIAR = str(Path(__file__).parents[1] / "support" / "liar.py")
LIES = {
    "port-abc": ["PORT=abc"],
    "port-high": ["PORT=99999"],
    "port-other": ["PORT=7070"],  # a real port, just not its own: the router would follow it
    "port-digits": ["PORT=٣٠٠٠"],  # Arabic-Indic digits, which int() would take
    "impostor": ["SANDBOXD_SANDBOX=honest"],  # another sandbox's name, to take its traffic
    "health": ["SANDBOXD_HEALTH=/ HTTP/1.1\r\nX: y"],
    "plan": ["SANDBOXD_PLAN=not-a-digest"],
    # a name the orphan collector would remove the logs of: <data dir>/forks/../../victim
    "traversal": ["SANDBOXD_SANDBOX=../../victim"],
}


def test_a_restart_stops_lying_forks_and_adopts_the_rest(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("mine")
    baseline = free_port()
    catalog = write_catalog(tmp_path / "sandboxd.yaml", baseline_port=baseline)
    args = ["--start-baseline"]
    env = {"SANDBOXD_STOP_GRACE": "2"}
    with running_sandboxd(tmp_path / "data", catalog=catalog, env=env, args=args) as server:
        with server.client() as client:
            # an honest fork with a child process: the child carries the markers too
            honest = ["sh", "-c", f"sleep 600 & exec {sys.executable} {ENVSERVER}"]
            specs = {"honest": honest} | {
                n: [sys.executable, LIAR, *lie] for n, lie in LIES.items()
            }
            for name, command in specs.items():
                forks = [{"service": "echo", "command": command}]
                assert client.post("/v1/sandboxes", json={"name": name, "forks": forks}).is_success
            before = {n: wait_phase(client, n, "Ready")["forks"][0] for n in specs}
        server.kill()
        server.start()  # used to fail for good on PORT=abc, with the baselines already stopped
        assert httpx.get(f"http://127.0.0.1:{baseline}/").status_code == 200
        with server.client() as client:
            after = poll.until(
                lambda: client.get("/v1/sandboxes/honest").json(),
                lambda b: b["phase"] == "Ready" and b["forks"][0]["ready"],
                timeout=20,
            )["forks"][0]
            assert after["pid"] == before["honest"]["pid"]  # adopted, not restarted
            assert after["upstream"] == before["honest"]["upstream"]
            for name in LIES:
                liar = before[name]["pid"]
                poll.until(lambda pid=liar: alive(pid), lambda running: not running, timeout=20)
                assert f"stopping pid {liar}: not a fork sandboxd started" in server.log()
                again = poll.until(  # the sandbox still wants its fork: a new one
                    lambda n=name: client.get(f"/v1/sandboxes/{n}").json(),
                    lambda b, pid=liar: b["phase"] == "Ready" and b["forks"][0]["pid"] != pid,
                    timeout=20,
                )
                assert again["forks"][0]["upstream"] != "http://127.0.0.1:7070"
        assert (victim / "keep").read_text() == "mine"
        assert len(_group(before["honest"]["pid"])) == 2  # the child was not taken for a stray
        assert "Traceback" not in server.log()


def _group(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members
