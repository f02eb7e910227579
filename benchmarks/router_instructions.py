"""Instructions per proxied request, counted by callgrind: the router compiled (mypyc), the same
router from its plain sources, and nginx doing the same baggage routing, in one run.

    .venv/bin/python benchmarks/router_instructions.py [--requests N] [--compiled-only]
        [--recording] [--against GIT-REF | --against-venv DIR]

Instruction counts do not move with the host's noise (wall-clock figures on these VMs swing by
tens of percent), so this is the figure to watch when changing the hot path. Each proxy runs
under `valgrind --tool=callgrind` with counting off; a client sends warm-up requests on one
keep-alive connection, counting is switched on for N requests (`callgrind_control -i on`), off
again, and the total is divided by N. User space only: system calls are not instructions here.
The request is the throughput benchmark's (a 3-member baggage, a table of 1,000 sandboxes, the
key routed to a fork; 1 KiB responses from an nginx origin).

`--against REF` also builds the router of a git ref (compiled, in a temporary directory; see
benchmarks/_against.py) and measures it in the same run, printing the tree's count over it: the
check that a change to the hot path costs no instructions. `--against-venv DIR` measures the
router installed in another virtualenv instead. `--compiled-only` skips the interpreted router
and nginx. The router records every request (the default; access log off, no control plane);
`--recording` also measures it with `--record off`: what recording costs the request path;
`--cookie` adds a browser's Cookie header to every request (what looking for the preview cookie
costs).
A process's count moves by up to about 1 % with its string-hash seed (dict probes), so
`--rounds N` measures each subject in N processes, in turn, and shows the median.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _against, _nginx, _routes
from benchmarks._bench import BAGGAGE, SANDBOX, TABLE, Bench, Settings
from benchmarks._procs import (
    HarnessError,
    Processes,
    ensure_tools,
    free_port,
    interrupt_on_signals,
    prepare_self,
    venv_bin,
)

ROUTER_SOURCES = Path(__file__).resolve().parents[1] / "router" / "src" / "sandboxd_router"
WARM_UP = 300
COOKIE = "_ga=GA1.1.1234567890.1700000000; theme=dark; session=8f14e45fceea167a5a36dedd4bea2543"
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


@dataclass
class Subject:
    name: str
    argv: list[str]
    port: int
    env: dict[str, str] | None = None
    says: str = ""  # what its log must say (the router: which build of its hot path runs)


def exchange(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise HarnessError("the proxy closed the connection")
        data += chunk
        end = data.find(b"\r\n\r\n")
        length = _LENGTH.search(data, 0, end + 2) if end >= 0 else None
        if length is not None and len(data) >= end + 4 + int(length.group(1)):
            return data[: end + 4]


def count(subject: Subject, work_dir: Path, n: int, run: int = 0, *, cookie: str = "") -> float:
    name = f"{subject.name}.{run}"
    out = work_dir / f"{name}.callgrind"
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out}", *subject.argv]  # fmt: skip
    log = (work_dir / f"{name}.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, env=subject.env)
    try:
        sock = _connect(subject, proc)
        extra = f"Cookie: {cookie}\r\n" if cookie else ""
        request = f"GET / HTTP/1.1\r\nHost: x\r\nbaggage: {BAGGAGE}\r\n{extra}\r\n".encode()
        for _ in range(WARM_UP):
            head = exchange(sock, request)
        if f"sandbox={SANDBOX}".encode() not in head or not head.startswith(b"HTTP/1.1 200"):
            raise HarnessError(f"{subject.name}: not routed to the fork: {head!r}")
        logged = (work_dir / f"{name}.log").read_text(errors="replace")
        if subject.says not in logged:
            raise HarnessError(f"{subject.name}: its log does not say {subject.says!r}")
        _control(proc, "-i", "on")
        for _ in range(n):
            exchange(sock, request)
        _control(proc, "-i", "off")
        _control(proc, "-d")
        sock.close()
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
    totals = [
        int(line.split()[1])
        for dump in work_dir.glob(f"{name}.callgrind*")
        for line in dump.read_text(errors="replace").splitlines()
        if line.startswith("totals:")
    ]
    return max(totals, default=0) / n


def _connect(subject: Subject, proc: subprocess.Popen[bytes]) -> socket.socket:
    deadline = time.monotonic() + 180  # Python under valgrind starts slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(f"{subject.name} exited under valgrind ({proc.returncode})")
        try:
            sock = socket.create_connection(("127.0.0.1", subject.port), timeout=60)
        except OSError:
            time.sleep(0.5)
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise HarnessError(f"{subject.name} never listened on {subject.port}")


def _control(proc: subprocess.Popen[bytes], *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(proc.pid)], check=True, capture_output=True)


def subjects(
    bench: Bench, work_dir: Path, tools: dict[str, str], args: argparse.Namespace
) -> list[Subject]:
    python = venv_bin("python")
    builds = [("compiled", python, {}, "hot path: compiled")]
    if args.against:
        site = _against.built_at(args.against, work_dir)
        builds.append((args.against, python, {"PYTHONPATH": str(site)}, "hot path: compiled"))
    elif args.against_venv:
        other = _against.from_venv(args.against_venv)
        builds.append((str(args.against_venv), other, {}, "hot path: compiled"))
    if not args.compiled_only:
        interpreted = work_dir / "interpreted"  # the sources alone: no build, no manifest
        shutil.copytree(
            ROUTER_SOURCES,
            interpreted / "sandboxd_router",
            ignore=shutil.ignore_patterns("*.so", "_compiled.json", "__pycache__"),
        )
        env = {"PYTHONPATH": str(interpreted)}
        builds.append(("interpreted", python, env, "hot path: interpreted"))
    found: list[Subject] = []
    for i, (name, interpreter, env, says) in enumerate(builds):
        port = free_port()
        table = work_dir / f"router-{i}-routes.json"
        _routes.write_table(table, services=[bench.echo], ports={"echo": port}, n=TABLE)
        argv = [interpreter, "-m", "sandboxd_router", "--routes-file", str(table),
                "--access-log", "off", "--busy-poll-us", "0"]  # fmt: skip
        env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **env}
        found.append(Subject(f"router {name}", argv, port, env, says))
        if args.recording and name == "compiled":  # the request path's part of recording
            off = [*argv, "--record", "off"]
            found.append(Subject("router record-off", off, port, env, says))
    if args.compiled_only:
        return found
    port = free_port()
    run_dir = work_dir / "nginx-peer"
    conf = _nginx.write(
        run_dir,
        _nginx.routing_conf(
            run_dir,
            listen={"echo": port},
            upstreams={"echo": (bench.echo.baseline_port, bench.echo.fork_port)},
            keys=_routes.keys(TABLE),
        ),
    )
    argv = _nginx.argv(tools["nginx"], run_dir, conf)
    argv[-1] = "daemon off; master_process off;"  # one process does the work, as callgrind sees
    found.append(Subject("nginx", argv, port))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="counted per subject")
    parser.add_argument(
        "--rounds", type=int, default=1, help="processes per subject (the median is shown)"
    )
    parser.add_argument("--compiled-only", action="store_true", help="skip interpreted and nginx")
    parser.add_argument(
        "--recording",
        action="store_true",
        help="also the compiled router with --record off (what recording adds to the request "
        "path; its telemetry process is not counted)",
    )
    parser.add_argument(
        "--cookie",
        action="store_true",
        help="every request also carries a browser's Cookie header (three cookies, none the "
        "router's): what looking for the preview cookie costs",
    )
    other = parser.add_mutually_exclusive_group()
    other.add_argument("--against", metavar="REF", help="also measure the router of a git ref")
    other.add_argument(
        "--against-venv", metavar="DIR", type=Path, help="also measure another venv's router"
    )
    args = parser.parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"router_instructions: {tool} is missing (Debian: apt-get install valgrind)")
            return 2
    interrupt_on_signals()
    prepare_self()
    tools = ensure_tools()
    with tempfile.TemporaryDirectory(prefix="sandboxd-instructions-") as tmp:
        work_dir = Path(tmp)
        work_dir.chmod(0o755)  # nginx workers run as nobody when we are root
        (work_dir / "logs").mkdir()
        procs = Processes(work_dir / "logs")
        bench = Bench(Settings(router=False), tools, work_dir, procs)
        try:
            bench.start_servers()
            measured = subjects(bench, work_dir, tools, args)
            runs: dict[str, list[float]] = {s.name: [] for s in measured}
            for run in range(args.rounds):  # each subject once a round, in turn
                for subject in measured:
                    cookie = COOKIE if args.cookie else ""
                    runs[subject.name].append(
                        count(subject, work_dir, args.requests, run, cookie=cookie)
                    )
            results = {name: statistics.median(values) for name, values in runs.items()}
        except HarnessError as e:
            print(f"router_instructions: {e}", file=sys.stderr)
            return 1
        finally:
            procs.stop_all()
    print(f"Instructions per proxied request (callgrind, user space, {args.requests} requests, "
          f"c=1 keep-alive, 1 KiB responses, {TABLE:,} sandboxes, routed to a fork"
          f"{', a Cookie header' if args.cookie else ''}):")  # fmt: skip
    for name, value in results.items():
        spread = f"  ({min(runs[name]):,.0f} to {max(runs[name]):,.0f})" if args.rounds > 1 else ""
        print(f"  {name:20} {value:10,.0f}{spread}")
    compiled = results["router compiled"]
    against = args.against or (str(args.against_venv) if args.against_venv else None)
    if against is not None:
        print(f"  compiled ÷ {against}: {compiled / results[f'router {against}']:.4f}")
    if args.recording:
        off = results["router record-off"]
        print(f"  recording on - off: {compiled - off:,.0f} instructions a request "
              f"({compiled / off:.3f} times)")  # fmt: skip
    if not args.compiled_only:
        print(f"  compiled ÷ interpreted: {compiled / results['router interpreted']:.2f}")
        print(f"  compiled ÷ nginx:       {compiled / results['nginx']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
