"""Fault benchmark: how exact an injected latency is, and what a drop_fields rewrite costs.

Run:  .venv/bin/python benchmarks/faults.py [--quick] [--reps R] [--requests N]

Method: `sandboxd-router` in its default configuration (access log ON, one line per request to
stdout, here a file) pinned to core 0, serving a static route table; an nginx origin (1
worker) and this script's client on core 1. One keep-alive connection per variant, c=1, closed
loop; the variants' requests interleaved one by one (A, B, A, B, …, the order turned each
round), so that both see the same machine. Every response is checked: status, and the
`sandboxd-fault` header present exactly when it should be.

- latency: `GET /` with the key of a sandbox that has `latency 50 ms` on the service, beside
  the same request with the key of a sandbox without faults. Added at q = the faulted
  request's q-quantile - the unfaulted one's. Bar (issue 12): 50-55 ms added at p99.
- drop_fields: a `tools/call` answered with a JSON-RPC result of about 4 KiB of
  `structuredContent` plus the same JSON as a text content item, rewritten by a `drop_fields`
  fault (3 fields), beside the unfaulted call; also shown: a sandbox whose only fault is on
  another tool (the body is read and matched, nothing is rewritten), and nginx direct. Added =
  p50 faulted - p50 unfaulted, the median over the rounds. Bar: ≤ 0.2 ms at p50.

Exits 0 whatever the bars say; 1 when the harness failed, 2 when it could not start.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _loadgen, _nginx, _routes, _tool_result  # noqa: E402
from benchmarks._bench import Bar  # noqa: E402
from benchmarks._procs import (  # noqa: E402
    HarnessError,
    Processes,
    ensure_tools,
    free_port,
    interrupt_on_signals,
    machine_load,
    prepare_self,
)
from benchmarks._stats import BACKEND, median, ms, percentile  # noqa: E402

LATENCY_MS = 50
SANDBOXES = {  # sandbox → its faults (fork-less: every request goes to the baseline)
    "plain": [],
    "slow": [{"id": "lag", "service": "web", "kind": "latency", "latencyMs": LATENCY_MS}],
    "other-tool": [
        {
            "id": "elsewhere",
            "service": "tools",
            "kind": "drop_fields",
            "tool": "another_tool",
            "fields": _tool_result.DROPPED,
        }
    ],
    "drop": [
        {
            "id": "drop",
            "service": "tools",
            "kind": "drop_fields",
            "tool": _tool_result.TOOL,
            "fields": _tool_result.DROPPED,
        }
    ],
}
FAULT = {"slow": b"latency; id=lag", "drop": b"drop_fields; id=drop"}  # expected headers
FAULT_HEADER = re.compile(rb"\r\nsandboxd-fault:[ \t]*([^\r]*)", re.IGNORECASE)


@dataclass(frozen=True)
class Settings:
    reps: int = 3
    latency_requests: int = 500  # per variant and round (a faulted one takes 50 ms)
    rewrite_requests: int = 3000

    @classmethod
    def quick(cls) -> Settings:
        return cls(reps=1, latency_requests=150, rewrite_requests=1000)


@dataclass
class Variant:
    """One kind of request on its own keep-alive connection."""

    name: str
    port: int
    request: bytes
    fault: bytes | None  # the `sandboxd-fault` value it must carry (None: none)
    samples_ns: list[list[int]] = field(default_factory=list)  # per round
    wrong: list[str] = field(default_factory=list)


def table(*, web: int, mcp: int, ports: dict[str, int]) -> dict[str, object]:
    return {
        "baggageKey": _routes.BAGGAGE_KEY,
        "services": [
            {"name": "web", "protocol": "http", "routerPort": ports["web"],
             "baseline": f"http://127.0.0.1:{web}"},
            {"name": "tools", "protocol": "mcp", "routerPort": ports["tools"],
             "baseline": f"http://127.0.0.1:{mcp}"},
        ],
        "routes": {
            key(name): {"sandbox": name, "forks": {}, "faults": faults}
            for name, faults in SANDBOXES.items()
        },
        "version": "faults-bench",
    }  # fmt: skip


def key(sandbox: str) -> str:
    return _routes.key_of(list(SANDBOXES).index(sandbox))


def start(procs: Processes, work_dir: Path, nginx: str) -> tuple[dict[str, int], dict[str, int]]:
    """The origin and the router: (origin ports, router ports) by service."""
    origin = {"web": free_port(), "tools": free_port()}
    run_dir = work_dir / "origin"
    text = _tool_result.origin_conf(run_dir, web_port=origin["web"], mcp_port=origin["tools"])
    conf = _nginx.write(run_dir, text)
    procs.start("origin", _nginx.argv(nginx, run_dir, conf), cpu=1)
    for port in origin.values():
        procs.wait_accepting("origin", port)
    ports = {"web": free_port(), "tools": free_port()}
    path = work_dir / "routes.json"
    path.write_text(json.dumps(table(web=origin["web"], mcp=origin["tools"], ports=ports)))
    router = _routes.Router("router", ports, free_port(), len(SANDBOXES))
    source = ["--routes-file", str(path)]
    argv = _routes.argv(admin_port=router.admin_port, source=source, record=True)
    procs.start("router", argv, cpu=0)
    _routes.wait_ready(procs, router)
    health = _routes.healthz(router.admin_port) or {}
    print(f"router hot path: {health.get('hotPath', 'unknown')}; access log: on (stdout → file)")
    return origin, ports


def web_get(port: int, sandbox: str) -> bytes:
    return _loadgen.request(port, baggage=_routes.baggage(key(sandbox)))


def tool_call(port: int, sandbox: str) -> bytes:
    return _tool_result.request(port, _routes.baggage(key(sandbox)))


def measure(variants: list[Variant], *, requests: int) -> None:
    """One round: `requests` per variant, interleaved, the order turned by one each time."""

    async def go() -> None:
        conns = [await _loadgen.Connection.open(v.port) for v in variants]
        for conn, variant in zip(conns, variants, strict=True):  # warm-up: the same requests
            for _ in range(20):
                await conn.exchange(variant.request)
        rounds: list[list[int]] = [[] for _ in variants]
        for i in range(requests):
            for j in range(len(variants)):
                at = (i + j) % len(variants)
                sent = time.perf_counter_ns()
                done, head = await conns[at].exchange(variants[at].request)
                rounds[at].append(done - sent)
                _check(variants[at], head)
        for conn, variant, samples in zip(conns, variants, rounds, strict=True):
            conn.close()
            variant.samples_ns.append(samples)

    _loadgen.run_async(go())


def _check(variant: Variant, head: bytes) -> None:
    faults = FAULT_HEADER.findall(head)
    want = [variant.fault] if variant.fault else []
    if not head.startswith(b"HTTP/1.1 200") or faults != want:
        first = head.split(b"\r\n", 1)[0].decode("latin-1")
        variant.wrong.append(f"{first}; sandboxd-fault {faults}")


def check_rewrite(port: int) -> None:
    """Before measuring: the faulted call comes back without the fields, the others intact."""
    url = f"http://127.0.0.1:{port}/mcp"
    original = _tool_result.body()
    for sandbox in ("plain", "other-tool", "drop"):
        raw = tool_call(port, sandbox)
        head, _, payload = raw.partition(b"\r\n\r\n")
        headers = dict(
            line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line
        )
        response = httpx.post(url, content=payload, headers=headers, timeout=5)
        fault = response.headers.get("sandboxd-fault")
        if sandbox != "drop":
            ok = response.content == original and fault is None
        else:
            ok = fault == FAULT["drop"].decode() and _dropped(response.json())
        print(
            f"  {sandbox:10} tools/call → {response.status_code}, {len(response.content)} bytes "
            f"(origin's {len(original)}), sandboxd-fault: {fault}  {'ok' if ok else 'MISMATCH'}"
        )
        if not ok:
            raise HarnessError(f"{sandbox}: unexpected answer {response.text[:300]!r}")


def _dropped(message: dict[str, Any]) -> bool:
    """The 3 fields are gone from the structured content and from the text item's JSON, and
    everything else is there."""
    want: dict[str, Any] = _tool_result.data()
    for item in want["items"]:
        del item["customer"]["email"], item["internal_note"]
    del want["cursor"]
    result = message.get("result") or {}
    text = json.loads(result["content"][0]["text"])
    return bool(result["structuredContent"] == want and text == want)


def latency_bar(slow: Variant, plain: Variant) -> Bar:
    faulted = [x for r in slow.samples_ns for x in r]
    unfaulted = [x for r in plain.samples_ns for x in r]
    added = {q: percentile(faulted, q) - percentile(unfaulted, q) for q in (0.5, 0.99)}
    strict = percentile(faulted, 0.99) - percentile(unfaulted, 0.5)
    early = sum(1 for x in faulted if x < LATENCY_MS * 1_000_000)
    print(
        f"\nInjected latency {LATENCY_MS} ms (http, GET /, 1 KiB): {len(faulted)} faulted and "
        f"{len(unfaulted)} unfaulted requests over {len(slow.samples_ns)} round(s), interleaved"
    )
    for v, samples in ((plain, unfaulted), (slow, faulted)):
        print(
            f"  {v.name:10} p50 {ms(percentile(samples, 0.5))}  p99 {ms(percentile(samples, 0.99))}"
            f"  min {ms(min(samples))}  max {ms(max(samples))}  {len(v.wrong)} wrong answers"
        )
    print(
        f"  added (faulted q-quantile - unfaulted q-quantile): p50 {ms(added[0.5])}, "
        f"p99 {ms(added[0.99])}; stricter, faulted p99 - unfaulted p50: {ms(strict)}"
    )
    print(
        f"  {early} of {len(faulted)} faulted requests took less than {LATENCY_MS} ms from send "
        f"to response (fastest {ms(min(faulted))}): the delay itself fired early"
    )
    wrong = len(slow.wrong) + len(plain.wrong)
    return Bar(
        f"latency {LATENCY_MS} ms injected, added at p99",
        f"{ms(added[0.99])} (p99 faulted {ms(percentile(faulted, 0.99))} - p99 unfaulted "
        f"{ms(percentile(unfaulted, 0.99))}; p50 added {ms(added[0.5])}; faulted p99 - "
        f"unfaulted p50 {ms(strict)}; {early} under {LATENCY_MS} ms; {wrong} wrong answers)",
        "50-55 ms",
        50e6 <= added[0.99] <= 55e6 and wrong == 0,
    )


def rewrite_bar(variants: dict[str, Variant]) -> Bar:
    n = len(variants["drop"].samples_ns)
    print(
        f"\ndrop_fields on a {len(_tool_result.body())}-byte tools/call result (structuredContent "
        f"{len(json.dumps(_tool_result.data()))} bytes + the same JSON as text), c=1: "
        f"{len(variants['drop'].samples_ns[0])} requests per variant and round, {n} round(s)"
    )
    p50: dict[str, list[float]] = {}
    for name, v in variants.items():
        p50[name] = [percentile(r, 0.5) for r in v.samples_ns]
        pooled = [x for r in v.samples_ns for x in r]
        print(
            f"  {name:10} p50 {ms(median(p50[name]))}  p99 {ms(percentile(pooled, 0.99))}  "
            f"(round p50s {', '.join(ms(x) for x in p50[name])}; {len(v.wrong)} wrong answers)"
        )
    added = median([d - p for d, p in zip(p50["drop"], p50["plain"], strict=True)])
    read = median([o - p for o, p in zip(p50["other-tool"], p50["plain"], strict=True)])
    print(
        f"  added over the unfaulted call at p50: drop_fields {ms(added)} (of which reading and "
        f"matching the body, a fault on another tool: {ms(read)})"
    )
    wrong = sum(len(v.wrong) for v in variants.values())
    return Bar(
        "drop_fields of a 4 KiB MCP tool result, added at p50",
        f"{ms(added)} (median over {n} round(s) of p50 drop_fields - p50 unfaulted; "
        f"{wrong} wrong answers)",
        "≤ 0.2 ms",
        added <= 200_000 and wrong == 0,
    )


def run(config: Settings, work_dir: Path, procs: Processes, nginx: str) -> list[Bar]:
    origin, ports = start(procs, work_dir, nginx)
    print("\nChecks (every measured response is checked too)")
    check_rewrite(ports["tools"])
    slow = Variant("slow", ports["web"], web_get(ports["web"], "slow"), FAULT["slow"])
    plain = Variant("plain", ports["web"], web_get(ports["web"], "plain"), None)
    tools: dict[str, Variant] = {
        "direct": Variant("direct", origin["tools"], tool_call(origin["tools"], "plain"), None),
        "plain": Variant("plain", ports["tools"], tool_call(ports["tools"], "plain"), None),
        "other-tool": Variant(
            "other-tool", ports["tools"], tool_call(ports["tools"], "other-tool"), None
        ),
        "drop": Variant("drop", ports["tools"], tool_call(ports["tools"], "drop"), FAULT["drop"]),
    }
    for _ in range(config.reps):
        measure([plain, slow], requests=config.latency_requests)
        measure(list(tools.values()), requests=config.rewrite_requests)
    return [latency_bar(slow, plain), rewrite_bar(tools)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, fewer requests")
    parser.add_argument("--reps", type=int, help="rounds (default 3)")
    parser.add_argument("--requests", type=int, help="requests per variant per round, rewrite")
    args = parser.parse_args(argv)
    base = Settings.quick() if args.quick else Settings()
    config = Settings(
        reps=args.reps or base.reps,
        latency_requests=base.latency_requests,
        rewrite_requests=args.requests or base.rewrite_requests,
    )
    interrupt_on_signals()
    try:
        prepare_self()
        nginx = ensure_tools()["nginx"]
    except (HarnessError, subprocess.CalledProcessError) as e:
        print(f"fault benchmark: {e}", file=sys.stderr)
        return 2
    print(f"fault benchmark: {config}; percentiles: {BACKEND}")
    print("router: default configuration (access log on), core 0; origin nginx and client: core 1")
    machine_load("before (nothing of ours running)")
    with tempfile.TemporaryDirectory(prefix="sandboxd-fault-bench-") as tmp:
        work_dir = Path(tmp)
        os.chmod(work_dir, 0o755)  # nginx workers run as nobody when we are root
        (work_dir / "logs").mkdir()
        procs = Processes(work_dir / "logs")
        try:
            bars = run(config, work_dir, procs, nginx)
            machine_load("after (ours idle)")
        except (HarnessError, OSError) as e:
            print(f"\nfault benchmark: harness failed: {e!r}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted: stopping every server", file=sys.stderr)
            return 130
        finally:
            procs.stop_all()
    print("\nIssue 12 fault bars (router default configuration: access log on)")
    for i, bar in enumerate(bars, 1):
        print(f"  {i}. {bar.title}: {bar.measured}; bar {bar.bar}: {'PASS' if bar.ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
