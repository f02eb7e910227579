"""Closed-loop throughput with `wrk -t1` (Debian), pinned to core 1 beside the origin."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks._procs import HarnessError, pinned

# Counts, per wrk thread, responses whose `sandboxd-route` and `x-origin` differ from what the
# request's key should give; `done` prints them.
ROUTE_CHECK_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) good = 0; bad = 0; sample = "" end
function response(status, headers, body)
  local route, origin = "", ""
  for k, v in pairs(headers) do
    local name = string.lower(k)
    if name == "sandboxd-route" then route = v elseif name == "x-origin" then origin = v end
  end
  if status == 200 and route == wrk.expect_route and origin == wrk.expect_origin then
    good = good + 1
  else
    bad = bad + 1
    if sample == "" then sample = status .. " route=" .. route .. " origin=" .. origin end
  end
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write(string.format("route-check good=%d bad=%d sample=%s\\n",
      t:get("good"), t:get("bad"), t:get("sample")))
  end
end
"""


@dataclass(frozen=True)
class WrkResult:
    rps: float
    requests: int
    non_2xx: int
    socket_errors: int

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def run(
    wrk: str,
    url: str,
    *,
    connections: int,
    duration: float,
    baggage: str,
    script: Path | None = None,
) -> tuple[WrkResult, str]:
    """One wrk run; returns the parsed figures and wrk's full output."""
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-H",
        f"baggage: {baggage}",
    ]
    if script is not None:
        argv += ["-s", str(script)]
    try:
        done = subprocess.run(
            pinned(1, [*argv, url]), capture_output=True, text=True, timeout=duration + 30
        )
    except subprocess.TimeoutExpired as e:
        raise HarnessError(f"wrk did not finish: {' '.join(argv)}") from e
    out = done.stdout + done.stderr
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if done.returncode != 0 or rps is None or total is None:
        raise HarnessError(f"wrk failed ({done.returncode}) on {url}:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return (
        WrkResult(
            rps=float(rps.group(1)),
            requests=int(total.group(1)),
            non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
            socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
        ),
        out,
    )


def route_check(
    wrk: str,
    url: str,
    *,
    work_dir: Path,
    baggage: str,
    expect_route: str,
    expect_origin: str,
    connections: int = 32,
    duration: float = 1,
) -> tuple[int, int, str]:
    """Under load, how many responses were routed right and wrong, and a wrong one's summary."""
    script = work_dir / "route-check.lua"
    script.write_text(
        f'wrk.expect_route = "{expect_route}"\nwrk.expect_origin = "{expect_origin}"\n'
        + ROUTE_CHECK_LUA
    )
    _, out = run(
        wrk, url, connections=connections, duration=duration, baggage=baggage, script=script
    )
    found = re.search(r"route-check good=(\d+) bad=(\d+) sample=(.*)", out)
    if found is None:
        raise HarnessError(f"wrk route check printed nothing:\n{out}")
    return int(found.group(1)), int(found.group(2)), found.group(3).strip()
