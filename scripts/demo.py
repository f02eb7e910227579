"""The quickstart demo (run through scripts/demo): a PR's fork beside the untouched baseline.

Starts `sandboxd serve --start-baseline` with examples/quickstart, creates the PR's sandbox with
the `sandbox` CLI, calls the baseline and the fork, shows the route table routers receive, and
then either keeps running (Ctrl-C to stop) or, with --once, deletes the sandbox, checks that
nothing is left, and exits 0 when every outcome is as expected.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "quickstart"
BIN = Path(sys.executable).parent


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def sandbox(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    print(f"$ sandbox {' '.join(args)}", flush=True)
    return subprocess.run([str(BIN / "sandbox"), *args], env=env, text=True, capture_output=True)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"sandboxd exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    sys.exit(f"sandboxd was not ready after 60 s:\n{log.read_text()[-3000:]}")


def get_json(url: str) -> dict[str, Any]:
    try:
        body: dict[str, Any] = httpx.get(url, timeout=5).json()
        return body
    except httpx.HTTPError as e:
        return {"error": str(e)}


def run(once: bool, port: int) -> bool:
    data_dir = Path(tempfile.mkdtemp(prefix="sandboxd-demo-"))
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
    env |= {"SANDBOXD_DATA_DIR": str(data_dir), "SANDBOXD_URL": url}
    log = data_dir / "sandboxd.log"
    say(f"starting sandboxd on {url} (data dir {data_dir})")
    with log.open("ab") as out:
        server = subprocess.Popen(
            [str(BIN / "sandboxd"), "serve", "--port", str(port), "--start-baseline",
             "--catalog", str(EXAMPLE / "sandboxd.yaml")],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    checks: dict[str, bool] = {}
    try:
        wait_ready(url, server, log)
        print("sandboxd is ready; the baseline greeter v1 runs on 127.0.0.1:7401")

        say("creating the PR's sandbox: it forks greeter only (v2)")
        up = sandbox("up", "-f", str(EXAMPLE / "sandboxes" / "pr-42.yaml"), env=env)
        print(up.stdout + up.stderr)
        checks["sandbox up exits 0 (Ready)"] = up.returncode == 0
        state = json.loads(sandbox("get", "pr-42", "-o", "json", env=env).stdout or "{}")
        fork = (state.get("forks") or [{}])[0]

        say("the baseline and the sandbox's fork, side by side")
        base = get_json("http://127.0.0.1:7401/")
        forked = get_json(str(fork.get("upstream")))
        print(f"  baseline  127.0.0.1:7401            → {json.dumps(base)}")
        print(f"  pr-42     {fork.get('upstream')} → {json.dumps(forked)}")
        checks["baseline answers v1"] = base.get("version") == "v1"
        checks["the fork answers v2"] = forked.get("version") == "v2"
        token = (data_dir / "admin-token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        services = len(httpx.get(f"{url}/v1/services", headers=auth).json()["items"])
        print(f"  cost: the sandbox runs {len(state.get('forks', []))} of the catalog's "
              f"{services} service(s); the rest stays the shared baseline")  # fmt: skip

        say("the route table every router long-polls (GET /v1/routes)")
        routes = httpx.get(f"{url}/v1/routes", headers=auth)
        print(json.dumps(routes.json(), indent=2))
        route = routes.json()["routes"].get(state.get("routingKey"), {})
        checks["the route table sends pr-42's key to its fork"] = route.get("forks", {}).get(
            "greeter"
        ) == fork.get("upstream")
        print("\nWith the router running, a request to http://127.0.0.1:7301/ carrying")
        print(f"  baggage: {state.get('baggage')}")
        print("reaches the fork; any other request reaches the baseline.")

        if not once:
            say("running — try it yourself, Ctrl-C to stop")
            print(f"  export SANDBOXD_URL={url} SANDBOXD_DATA_DIR={data_dir}")
            print("  sandbox list; sandbox events pr-42; sandbox logs pr-42 greeter")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})

        say("deleting the sandbox")
        down = sandbox("down", "pr-42", "--wait", env=env)
        print(down.stdout + down.stderr)
        gone = json.loads(sandbox("get", "pr-42", "-o", "json", env=env).stdout or "{}")
        checks["sandbox down leaves it Deleted"] = gone.get("phase") == "Deleted"
        checks["the fork's process is gone"] = "error" in get_json(str(fork.get("upstream")))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)
    checks["stopping sandboxd stops the baseline"] = "error" in get_json("http://127.0.0.1:7401/")

    say("outcome")
    for what, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    return all(checks.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--once", action="store_true", help="tear down and exit with the outcome")
    parser.add_argument("--port", type=int, default=7070, help="API port (default 7070)")
    args = parser.parse_args()
    if not args.once:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(0 if run(args.once, args.port) else 1)


if __name__ == "__main__":
    main()
