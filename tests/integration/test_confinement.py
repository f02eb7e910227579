"""PR code cannot reach sandboxd's secrets: a hostile fork under `sandboxd serve --with-router
--start-baseline` looks everywhere it could, and the embedded router's token reads routes only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandboxd.runtime import confine
from sandboxd.runtime.confine import Launch, launcher_argv
from tests.conftest import fork_command
from tests.integration.conftest import wait_phase
from tests.support import poll
from tests.support.server import Sandboxd, free_port, running_sandboxd

pytestmark = pytest.mark.slow
THIEF = str(Path(__file__).parents[1] / "support" / "thief.py")
HOME_SECRET = "home-admin-token-that-a-fork-must-not-read"
NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"  # the test's own Python lives where nobody may not go


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandboxd]:
    """sandboxd with its router and a baseline, its admin token generated into the data dir,
    and a second token in `~/.sandboxd` (HOME points into the test's directory)."""
    root = tmp_path_factory.mktemp("confine")
    home = root / "home"
    (home / ".sandboxd").mkdir(parents=True)
    (home / ".sandboxd" / "admin-token").write_text(HOME_SECRET)
    baseline = free_port()
    catalog = root / "sandboxd.yaml"
    catalog.write_text(
        f"""
services:
  - name: echo
    routerPort: {free_port()}
    baseline:
      url: http://127.0.0.1:{baseline}
      command: ["{sys.executable}", "{fork_command()[1]}"]
      health: /
"""
    )
    env = {"SANDBOXD_ADMIN_TOKEN": "", "HOME": str(home)}  # blank: generated into the file
    args = ["--with-router", "--start-baseline"]
    with running_sandboxd(root / "data", catalog=catalog, env=env, args=args) as server:
        server.token = (server.data_dir / "admin-token").read_text().strip()
        yield server


def secrets_of(server: Sandboxd) -> list[str]:
    reader = server.data_dir / "router-token"  # checked on its own below
    return [server.token, HOME_SECRET, *([reader.read_text().strip()] if reader.exists() else [])]


def test_a_fork_finds_none_of_sandboxds_secrets(system: Sandboxd) -> None:
    with system.client() as client:
        forks = [{"service": "echo", "command": [sys.executable, THIEF]}]
        assert client.post("/v1/sandboxes", json={"name": "thief", "forks": forks}).is_success
        fork = wait_phase(client, "thief", "Ready")["forks"][0]
    raw = httpx.get(fork["upstream"], timeout=30).text
    report: dict[str, Any] = json.loads(raw)
    for secret in secrets_of(system):
        assert secret not in raw
    assert report["data_dir"] == str(system.data_dir)
    assert report["listing"] == "read: []"  # the cover: empty, read-only
    for name in ("admin-token", "router-token", "database", "home", "after uncover"):
        assert report[name] == "denied: No such file or directory", name
    assert set(report["uncover"].values()) >= {"Operation not permitted"}
    proc = {k: v for k, v in report.items() if k.startswith("/proc/")}
    sandboxd, router = system.proc.pid if system.proc else 0, _router_pid(system)
    for pid in (sandboxd, router, 1):
        assert f"/proc/{pid}/environ" in proc, (pid, sorted(proc))
    for path, outcome in proc.items():
        if not path.endswith("/cmdline"):
            assert outcome.startswith("denied"), (path, outcome)


def test_the_router_token_reads_routes_and_nothing_else(system: Sandboxd) -> None:
    reader = (system.data_dir / "router-token").read_text().strip()
    with system.client(token=reader) as client:
        routes = client.get("/v1/routes")
        assert routes.status_code == 200 and "routes" in routes.json()
        for method, path in (("GET", "/v1/sandboxes"), ("GET", "/v1/services"),
                             ("POST", "/v1/sandboxes"), ("DELETE", "/v1/sandboxes/thief")):  # fmt: skip
            answer = client.request(method, path, json={"name": "sneak", "forks": []})
            assert answer.status_code == 403, (method, path, answer.text)
            assert answer.json()["error"] == "forbidden"
    with system.client() as admin:
        assert admin.get("/v1/sandboxes/sneak").status_code == 404
        assert admin.get("/v1/sandboxes").status_code == 200


def test_a_router_run_apart_can_use_the_router_token_file(system: Sandboxd, tmp_path: Path) -> None:
    """On another loopback address, the catalog's router ports are free for a second router."""
    port = json.loads(_get(system, "/v1/services"))["items"][0]["routerPort"]
    argv = [sys.executable, "-m", "sandboxd_router", "--control-url", system.url, "--token-file",
            str(system.data_dir / "router-token"), "--host", "127.0.0.2", "--access-log", "off"]  # fmt: skip
    with (tmp_path / "router.log").open("wb") as log:
        router = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        served = poll.until(
            lambda: _try_get(f"http://127.0.0.2:{port}/"), lambda r: r is not None, timeout=20
        )
        assert served.headers["sandboxd-route"] == "baseline"
    finally:
        router.terminate()
        router.wait(10)


def _get(server: Sandboxd, path: str) -> str:
    with server.client() as client:
        return client.get(path).text


def _try_get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


def test_the_router_runs_on_its_own_token_out_of_sight(system: Sandboxd) -> None:
    router = _router_pid(system)
    environ = Path(f"/proc/{router}/environ").read_bytes()  # the test runs as root: it may
    cmdline = Path(f"/proc/{router}/cmdline").read_bytes()
    for secret in secrets_of(system):
        assert secret.encode() not in environ and secret.encode() not in cmdline
    assert (system.data_dir.stat().st_mode & 0o777) == 0o700
    for name in ("admin-token", "router-token", "fork-seal.key"):
        assert ((system.data_dir / name).stat().st_mode & 0o777) == 0o600, name


def test_a_baseline_and_a_fork_run_confined_and_still_serve(system: Sandboxd) -> None:
    with system.client() as client:
        forks = [{"service": "echo", "command": fork_command()}]
        client.post("/v1/sandboxes", json={"name": "plain", "forks": forks})
        fork = wait_phase(client, "plain", "Ready")["forks"][0]
        baseline = client.get("/v1/services").json()["items"][0]["baseline"]["url"]
    for url in (fork["upstream"], baseline):
        served = httpx.get(url, timeout=10).json()
        status = Path(f"/proc/{served['pid']}/status").read_text()
        assert "NoNewPrivs:\t1" in status and "CapEff:\t0000000000000000" in status
        assert os.readlink(f"/proc/{served['pid']}/ns/user") != os.readlink("/proc/self/ns/user")


def test_without_user_namespaces_sandboxd_refuses_unless_allowed(tmp_path: Path) -> None:
    """No user namespaces (the limit set to 0 inside a user namespace of the test's own, which
    leaves the machine alone): `serve` refuses, naming the risk and the fix; with the opt-in it
    starts and says so with every fork."""
    port = free_port()
    catalog = tmp_path / "sandboxd.yaml"
    catalog.write_text(
        f"services:\n  - name: echo\n    baseline: {{url: 'http://127.0.0.1:{port}'}}\n"
    )
    refused = subprocess.run(_serve_without_userns(tmp_path, catalog), env=_env(tmp_path),
                             capture_output=True, timeout=60, check=False)  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    message = refused.stderr.decode()
    assert "forks cannot be confined" in message and "--allow-unconfined-forks" in message
    assert "admin token" in message and "Traceback" not in message

    argv = _serve_without_userns(tmp_path, catalog, "--allow-unconfined-forks")
    with (tmp_path / "allowed.log").open("wb") as log:
        allowed = subprocess.Popen(argv, env=_env(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    server = Sandboxd(data_dir=tmp_path, port=int(argv[argv.index("--port") + 1]), env={})
    try:
        poll.until(lambda: _ready(server.url), bool, timeout=20)
        with server.client(token="t" * 20) as client:
            forks = [{"service": "echo", "command": fork_command()}]
            client.post("/v1/sandboxes", json={"name": "open", "forks": forks})
            fork = wait_phase(client, "open", "Ready")["forks"][0]
        assert "runs unconfined" in fork["message"]
        assert "UNCONFINED" in (tmp_path / "allowed.log").read_text()
    finally:
        allowed.terminate()
        allowed.wait(30)


def _serve_without_userns(tmp_path: Path, catalog: Path, *args: str) -> list[str]:
    script = 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"'
    return ["unshare", "-Ur", "sh", "-c", script, "sh", sys.executable, "-m", "sandboxd",
            "serve", "--catalog", str(catalog), "--port", str(free_port()), *args]  # fmt: skip


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
    return env | {"SANDBOXD_DATA_DIR": str(tmp_path / "data"), "SANDBOXD_ADMIN_TOKEN": "t" * 20}


def test_the_launcher_execs_in_place_and_enters_its_directory_anew(tmp_path: Path) -> None:
    """Same pid and process group as sandboxd recorded; a working directory inside a hidden
    one does not reach under the cover; a command that cannot start says why."""
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "token").write_text("s3cret")
    spec = Launch(("sh", "-c", "echo $$ $(ps -o pgid= $$); cat token; ls -A"),
                  {"PATH": os.environ["PATH"]}, None, (str(hidden),))  # fmt: skip
    launcher = subprocess.Popen(
        launcher_argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        cwd=hidden, env={}, start_new_session=True,
    )  # fmt: skip
    out, _ = launcher.communicate(spec.encode(), timeout=30)
    pid, pgid = out.decode().split()[:2]
    assert int(pid) == int(pgid) == launcher.pid
    assert b"s3cret" not in out and b"No such file" in out

    missing = Launch(("/nonexistent/binary",), {}, None, ())
    failed = subprocess.run(launcher_argv(), input=missing.encode(), capture_output=True,
                            env={}, timeout=30, check=False)  # fmt: skip
    assert failed.returncode == 127
    assert failed.stderr.decode().strip() == (
        "sandboxd-confine: cannot start '/nonexistent/binary': No such file or directory"
    )


def test_no_dumps_makes_a_process_non_dumpable() -> None:
    code = "import ctypes; from sandboxd.runtime.confine import no_dumps; no_dumps(); " \
           "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30, check=True)
    assert done.stdout.strip() == b"0"


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _router_pid(server: Sandboxd) -> int:
    def find() -> int:
        for pid_dir in Path("/proc").iterdir():
            try:
                cmdline = (pid_dir / "cmdline").read_bytes()
            except OSError:
                continue
            if b"sandboxd_router" in cmdline and str(server.data_dir).encode() in cmdline:
                return int(pid_dir.name)
        return 0

    pid: int = poll.until(find, bool, timeout=20)
    return pid


def test_the_launcher_confines_an_unprivileged_user_too() -> None:
    """sandboxd as an ordinary user (nobody here; the system Python, which it may run): its
    fork cannot read a hidden directory, nor reach it through another process of the same user
    (/proc/<pid>/root), nor read that process's environment, which the user itself can."""
    with tempfile.TemporaryDirectory(dir="/tmp") as scratch:
        root = Path(scratch)
        root.chmod(0o755)
        launcher = root / "confine.py"  # run as a script: it needs the standard library only
        launcher.write_bytes(Path(confine.__file__).read_bytes())
        hidden = root / "hidden"
        hidden.mkdir(mode=0o700)
        (hidden / "token").write_text("nobody-secret")
        os.chown(hidden, NOBODY, NOBODY)
        os.chown(hidden / "token", NOBODY, NOBODY)
        as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        holder = subprocess.Popen([*as_nobody, "env", "SECRET=env-secret", "sleep", "300"])
        try:
            poll.until(lambda: _uid(holder.pid), lambda uid: uid == NOBODY, timeout=20)
            targets = [str(hidden / "token"), f"/proc/{holder.pid}/environ",
                       f"/proc/{holder.pid}/root{hidden}/token"]  # fmt: skip
            script = (
                "import sys\nfor p in sys.argv[1:]:\n    try: print(open(p).read())\n"
                "    except OSError as e: print(p, e.strerror)"
            )
            spec = Launch((SYSTEM_PYTHON, "-c", script, *targets), {}, "/", (str(hidden),))
            run = [*as_nobody, SYSTEM_PYTHON, "-I", "-S", str(launcher)]
            done = subprocess.run(run, input=spec.encode(), capture_output=True, timeout=30)
            bare = subprocess.run([*as_nobody, SYSTEM_PYTHON, "-c", script, targets[1]],
                                  capture_output=True, timeout=30)  # fmt: skip
        finally:
            holder.kill()
            holder.wait()
    assert b"env-secret" in bare.stdout  # unconfined, the user reads its own processes
    assert done.returncode == 0, done.stderr
    assert b"secret" not in done.stdout
    assert done.stdout.decode().splitlines() == [
        f"{targets[0]} No such file or directory",
        f"{targets[1]} Permission denied",
        f"{targets[2]} Permission denied",
    ]


def _uid(pid: int) -> int:
    try:
        return Path(f"/proc/{pid}").stat().st_uid
    except OSError:
        return -1
