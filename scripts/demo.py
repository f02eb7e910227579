"""The demo (run through scripts/demo): a pull request's change in a sandbox, beside the baseline.

The reference system is examples/troubleshooter/: an agent that diagnoses a crashing pod through
two MCP tool servers. A PR renames a field in one tool's result. `sandboxd serve --with-router
--start-baseline` runs the baseline and the router; the `sandbox` CLI creates two sandboxes —
the PR's tool alone (`schema-change`), and the PR after its fix (`fixed-agent`: the tool and an
agent whose prompt reads the new field) — and the agent is called three ways through one URL.
Then two fault scenarios (examples/troubleshooter/faults/): a rate-limited `get_logs` the agent
waits out, and a `describe_pod` cut into invalid JSON it refuses, visibly. Without --once it
keeps running until Ctrl-C; with --once it tears everything down, checks that nothing is left,
and exits 0 when every outcome is as expected.
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
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "troubleshooter"
BIN = Path(sys.executable).parent
PAGE = "http://127.0.0.1:7311/"  # the agent's routerPort in the catalog: its web page
AGENT = f"{PAGE}diagnose"
SANDBOXES = ("schema-change", "fixed-agent")
FAULT_SCENARIOS = {
    "rate_limit": ("fault-rate-limit", "get_logs answers 429, Retry-After: 1, twice"),
    "malformed": ("fault-malformed", "describe_pod's JSON is cut short"),
}
BASELINE_PORTS = (7411, 7412, 7413)


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def sandbox(*args: str, env: dict[str, str], show: bool = True) -> subprocess.CompletedProcess[str]:
    if show:
        print(f"$ sandbox {' '.join(args)}", flush=True)
    return subprocess.run([str(BIN / "sandbox"), *args], env=env, text=True, capture_output=True)


def wait_until(what: str, ready: Any, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"sandboxd exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if ready():
            return
        time.sleep(0.1)
    sys.exit(f"{what} not ready after 90 s:\n{log.read_text()[-3000:]}")


def answers(url: str, **headers: str) -> bool:
    try:
        httpx.get(url, headers=headers, timeout=2)
        return True
    except httpx.HTTPError:
        return False


def diagnose(baggage: str | None) -> dict[str, Any]:
    headers = {"baggage": f"userid=alice,{baggage}"} if baggage else {}
    try:
        response = httpx.post(AGENT, json={"namespace": "demo"}, headers=headers, timeout=30)
        body: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as e:
        return {"status": None, "route": None, "error": str(e), "ok": False}
    return {**body, "status": response.status_code, "route": response.headers.get("sandboxd-route")}


def page_of(url: str) -> str:
    """The agent's page a browser lands on from `url` (redirects and cookies followed)."""
    try:
        return httpx.get(url, follow_redirects=True, timeout=10).text
    except httpx.HTTPError as e:
        return str(e)


def show(label: str, answer: dict[str, Any]) -> None:
    print(f"  {label}")
    print(f"    HTTP {answer.get('status')}   sandboxd-route: {answer.get('route')}   "
          f"promptVersion: {answer.get('promptVersion')}")  # fmt: skip
    if answer.get("ok"):
        print(f"    diagnosis: {answer.get('diagnosis')}")
    else:
        print(f"    error:     {answer.get('error')}")


def fault_act(env: dict[str, str], base: dict[str, Any], checks: dict[str, bool]) -> dict[str, str]:
    """Faults in one sandbox's traffic: one the agent recovers from, one it fails on. Returns
    each scenario's sandbox name → its baggage."""
    say("faults: the unhappy path, injected into one sandbox's traffic only")
    keys: dict[str, str] = {}
    for kind, (name, _) in FAULT_SCENARIOS.items():
        up = sandbox("up", "-f", str(EXAMPLE / "faults" / f"{kind}.yaml"), env=env)
        print(up.stdout.strip().splitlines()[0] if up.stdout else up.stderr)
        checks[f"sandbox up {name} exits 0 (Ready)"] = up.returncode == 0
        state = json.loads(sandbox("get", name, "-o", "json", env=env, show=False).stdout or "{}")
        keys[kind] = str(state.get("baggage"))
    answers = {kind: diagnose(key) for kind, key in keys.items()}
    limited, garbled = answers["rate_limit"], answers["malformed"]
    retries = [
        r.get("retryAfter") for r in (limited.get("evidence") or [{}])[-1].get("retries", [])
    ]
    for kind, answer in answers.items():
        name, what = FAULT_SCENARIOS[kind]
        show(f"baggage: {keys[kind]}  ({name}: {what})", answer)
        if kind == "rate_limit":
            print(f"    get_logs was retried {len(retries)} times, after Retry-After {retries} s")
    checks["fault-rate-limit: the agent waits out the 429s and diagnoses"] = (
        limited.get("status") == 200
        and limited.get("diagnosis") == base.get("diagnosis")
        and len(retries) == 2
    )
    checks["fault-malformed: the agent fails visibly, naming describe_pod"] = (
        garbled.get("status") == 502
        and garbled.get("diagnosis") is None
        and str(garbled.get("error")).startswith("cluster-mcp describe_pod: answered invalid JSON")
    )
    checks["faults: the baseline's answer is unchanged"] = diagnose(None).get(
        "diagnosis"
    ) == base.get("diagnosis")
    counted = injected(env, "fault-rate-limit", until=2)
    print(sandbox("fault", "list", "fault-rate-limit", env=env).stdout.rstrip())
    checks["fault-rate-limit: the router counted 2 injections"] = counted == 2
    signals_act(env, checks)
    return {FAULT_SCENARIOS[kind][0]: key for kind, key in keys.items()}


def signals_act(env: dict[str, str], checks: dict[str, bool]) -> None:
    """What the harness reads afterwards: the sandbox's requests that a fault hit, each with
    its trace id, and its metrics beside the baseline's."""
    say("signals: what fault-rate-limit's traffic did, as the router recorded it")
    limited: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10  # the router reports about once a second
    while len(limited) < 2 and time.monotonic() < deadline:
        answer = sandbox("requests", "fault-rate-limit", "--fault", "logs-429", "-o", "json",
                         env=env, show=False)  # fmt: skip
        limited = json.loads(answer.stdout or "{}").get("items", [])
        time.sleep(0.2)
    print(sandbox("requests", "fault-rate-limit", "--limit", "6", env=env).stdout.rstrip())
    print(sandbox("metrics", "fault-rate-limit", "--include-injected", env=env).stdout.rstrip())
    checks["signals: the two limited get_logs calls are recorded, with their trace"] = (
        len(limited) == 2
        and all(r.get("status") == 429 and r.get("tool") == "get_logs" for r in limited)
        and all(r.get("traceId") for r in limited)
    )


def injected(env: dict[str, str], name: str, *, until: int) -> int:
    """The sandbox's first fault's `injected` count, once it reaches `until` (the router
    reports about once a second) or after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        state = json.loads(sandbox("get", name, "-o", "json", env=env, show=False).stdout or "{}")
        count = int((state.get("faults") or [{}])[0].get("injected", 0))
        if count >= until or time.monotonic() > deadline:
            return count
        time.sleep(0.2)


def run(once: bool, port: int) -> bool:
    data_dir = Path(tempfile.mkdtemp(prefix="sandboxd-demo-"))
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
    env |= {"SANDBOXD_DATA_DIR": str(data_dir), "SANDBOXD_URL": url}
    log = data_dir / "sandboxd.log"
    say(f"starting sandboxd with the router and the baseline (API {url}, data {data_dir})")
    with log.open("ab") as out:
        server = subprocess.Popen(
            [str(BIN / "sandboxd"), "serve", "--port", str(port), "--start-baseline",
             "--with-router", "--catalog", str(EXAMPLE / "sandboxd.yaml")],
            env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the demo, which then tears down in order
        )  # fmt: skip
    checks: dict[str, bool] = {}
    try:
        wait_until("sandboxd", lambda: answers(f"{url}/readyz"), server, log)
        wait_until("the router", lambda: answers("http://127.0.0.1:7311/healthz"), server, log)
        print("the baseline (agent, cluster-mcp, logs-mcp) runs on 127.0.0.1:7411-7413;")
        print("the router fronts them on 127.0.0.1:7311-7313")

        say("the pull request, twice: its tool change alone, and after its fix")
        keys: dict[str, str] = {}
        previews: dict[str, str] = {}
        for name in SANDBOXES:
            up = sandbox("up", "-f", str(EXAMPLE / "sandboxes" / f"{name}.yaml"), env=env)
            print(up.stdout.strip().splitlines()[0] if up.stdout else up.stderr)
            checks[f"sandbox up {name} exits 0 (Ready)"] = up.returncode == 0
            state = json.loads(
                sandbox("get", name, "-o", "json", env=env, show=False).stdout or "{}"
            )
            keys[name] = str(state.get("baggage"))
            previews[name] = str(state.get("links", {}).get("preview:agent"))
            forks = [f["service"] for f in state.get("forks", [])]
            share = f"{len(forks) / 3:.0%}"
            print(f"    runs {len(forks)} of the 3 services ({', '.join(forks)}); the rest is")
            print(f"    the shared baseline: it costs {share} of a full copy")

        say(f'POST {AGENT} {{"namespace": "demo"}} — three ways')
        base, broken, fixed = (
            diagnose(None),
            diagnose(keys["schema-change"]),
            diagnose(keys["fixed-agent"]),
        )
        show("no baggage (the baseline)", base)
        show(f"baggage: {keys['schema-change']}  (schema-change: only cluster-mcp v2)", broken)
        show(f"baggage: {keys['fixed-agent']}  (fixed-agent: cluster-mcp v2 + agent v2)", fixed)
        checks["baseline: a diagnosis naming DATABASE_URL"] = (
            bool(base.get("ok"))
            and "DATABASE_URL" in str(base.get("diagnosis"))
            and base.get("route") == "baseline"
        )
        checks["schema-change: the agent fails visibly on the renamed field"] = (
            broken.get("ok") is False
            and broken.get("status") == 502
            and "lastState" in str(broken.get("error"))
            and broken.get("diagnosis") is None
        )
        checks["fixed-agent: the fixed agent diagnoses again"] = (
            bool(fixed.get("ok"))
            and fixed.get("route") == "sandbox=fixed-agent"
            and fixed.get("promptVersion") == "v2"
        )
        checks["baseline unaffected by the sandboxes"] = diagnose(None).get(
            "diagnosis"
        ) == base.get("diagnosis")

        checks["fixed-agent's preview link opens its agent's page"] = (
            'data-sandbox="fixed-agent"' in page_of(previews["fixed-agent"])
            and 'data-sandbox="baseline"' in page_of(PAGE)
        )

        keys |= fault_act(env, base, checks)

        print("\nCall it yourself:")
        print(f'  curl -si -X POST {AGENT} -d \'{{"namespace":"demo"}}\'')
        body = '{"namespace":"demo"}'
        for name in keys:
            print(f"  curl -si -X POST {AGENT} -d '{body}' -H 'baggage: {keys[name]}'")
        print("\nOr open the agent's page in a browser (a preview link puts that browser in the")
        print("sandbox, for the page and its Diagnose button; ?sandboxd-preview=off leaves it):")
        print(f"  {PAGE}  the baseline")
        print(f"  {previews['schema-change']}  schema-change: the baseline agent, cluster-mcp v2")
        print(f"  {previews['fixed-agent']}  fixed-agent: agent v2, cluster-mcp v2")
        if not once:
            say("running — Ctrl-C to stop")
            print(f"  export SANDBOXD_URL={url} SANDBOXD_DATA_DIR={data_dir}")
            print("  sandbox list; sandbox events fixed-agent; sandbox logs fixed-agent agent")
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            while not stop.wait(0.5):
                pass

        say("tearing the sandboxes down")
        for name in (*SANDBOXES, *(name for name, _ in FAULT_SCENARIOS.values())):
            down = sandbox("down", name, "--wait", env=env)
            gone = json.loads(
                sandbox("get", name, "-o", "json", env=env, show=False).stdout or "{}"
            )
            checks[f"sandbox down {name} leaves it Deleted"] = (
                down.returncode == 0 and gone.get("phase") == "Deleted"
            )
        after = diagnose(keys["fixed-agent"])
        checks["a deleted sandbox's key reaches the baseline"] = (
            after.get("route") == "baseline" and after.get("promptVersion") == "v1"
        )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)
    checks["stopping sandboxd stops the baseline and the router"] = not any(
        answers(f"http://127.0.0.1:{p}/healthz") for p in (*BASELINE_PORTS, 7311)
    )

    say("outcome")
    for what, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    return all(checks.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--once", action="store_true", help="tear down and exit with the outcome")
    parser.add_argument("--port", type=int, default=7070, help="API port (default 7070)")
    args = parser.parse_args()
    sys.exit(0 if run(args.once, args.port) else 1)


if __name__ == "__main__":
    main()
