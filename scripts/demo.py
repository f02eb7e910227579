"""The quickstart demo (run through scripts/demo): a PR's fork beside the untouched baseline.

Starts `sandboxd serve --with-router --start-baseline` with examples/quickstart, creates the PR's
sandbox with the `sandbox` CLI, calls greeter through the router with and without the sandbox's
baggage, shows the route table routers receive, and then either keeps running (Ctrl-C to stop)
or, with --once, deletes the sandbox, checks that nothing is left, and exits 0 when every
outcome is as expected.
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
ROUTER = "http://127.0.0.1:7301/"  # greeter's routerPort in the quickstart catalog


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


def get_json(url: str, **headers: str) -> dict[str, Any]:
    try:
        response = httpx.get(url, headers=headers, timeout=5)
        body: dict[str, Any] = response.json()
        body["route"] = response.headers.get("sandboxd-route")
        return body
    except (httpx.HTTPError, ValueError) as e:
        return {"error": str(e)}


def wait_router(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "error" in get_json(url):
        time.sleep(0.1)


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
             "--with-router", "--catalog", str(EXAMPLE / "sandboxd.yaml")],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    checks: dict[str, bool] = {}
    try:
        wait_ready(url, server, log)
        wait_router(ROUTER)
        print("sandboxd is ready; the baseline greeter v1 runs on 127.0.0.1:7401,")
        print(f"and the router fronts it on {ROUTER}")

        say("creating the PR's sandbox: it forks greeter only (v2)")
        up = sandbox("up", "-f", str(EXAMPLE / "sandboxes" / "pr-42.yaml"), env=env)
        print(up.stdout + up.stderr)
        checks["sandbox up exits 0 (Ready)"] = up.returncode == 0
        state = json.loads(sandbox("get", "pr-42", "-o", "json", env=env).stdout or "{}")
        fork = (state.get("forks") or [{}])[0]

        say(f"the same URL, {ROUTER}, without and with the sandbox's baggage")
        baggage = str(state.get("baggage"))
        base = get_json(ROUTER)
        forked = get_json(ROUTER, baggage=f"userid=alice,{baggage}")
        for label, answer in (("no baggage", base), (f"baggage: userid=alice,{baggage}", forked)):
            print(f"  {label}")
            print(f"    sandboxd-route: {answer.get('route')}")
            shown = {k: answer.get(k) for k in ("version", "greeting", "sandbox")}
            print(f"    body:           {json.dumps(shown)}")
        checks["without baggage: the baseline (v1)"] = (base.get("version"), base.get("route")) == (
            "v1",
            "baseline",
        )
        checks["with the key: the PR's fork (v2)"] = (
            forked.get("version"),
            forked.get("route"),
        ) == ("v2", "sandbox=pr-42")
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
        print("\nTry it yourself while the demo runs (without --once):")
        print(f"  curl -i {ROUTER}")
        print(f"  curl -i -H 'baggage: {baggage}' {ROUTER}")

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
        after = get_json(ROUTER, baggage=baggage)
        checks["its key then reaches the baseline"] = after.get("route") == "baseline"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)
    checks["stopping sandboxd stops the baseline"] = "error" in get_json("http://127.0.0.1:7401/")
    checks["… and the router"] = "error" in get_json(ROUTER)

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
