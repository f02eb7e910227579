"""The request path's records, through the real router and its telemetry process: each request's
record, decoded there, says what its client saw; the process is restarted when it dies, stopped
last (the access log keeps its last lines), never sees the token in its argv or environment;
`--record off` records nothing.

The upstream is a small real HTTP server on loopback (a thread of this process): plain paths
for the `web` service, canned JSON-RPC answers for the `tools` (MCP) service.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.router.conftest import KEYS, Router, start_router
from tests.support import access_log, poll
from tests.support.server import free_port

LOST = re.compile(r"(\d+) request records lost")
FAULTS = [
    {"id": "rst", "service": "web", "kind": "reset", "path": "/reset"},
    {"id": "slowed", "service": "web", "kind": "latency", "path": "/slowed", "latencyMs": 50},
]


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/status/"):
            self._reply(int(self.path.rsplit("/", 1)[1]), b"status")
        elif self.path == "/cut":  # promises 100 bytes, sends 10, and goes
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif self.path == "/drip":  # 10 bytes of 100 now, the rest in a while
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            time.sleep(2)
            self.wfile.write(b"x" * 90)
        elif self.path == "/sleep":
            time.sleep(2)
            self._reply(200, b"late")
        else:
            self._reply(200, b"hello from " + self.path.encode())

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/mcp":  # (the `tools` service's clients post to /mcp)
            self._reply(200, b"got %d" % len(body))
            return
        message = json.loads(body)
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": message.get("id")}
        tool = message.get("params", {}).get("name")
        if message["method"] == "nope":
            answer["error"] = {"code": -32601, "message": "Method not found"}
        elif tool == "broken":
            answer["result"] = {"content": [{"type": "text", "text": "it broke"}], "isError": True}
        else:
            answer["result"] = {"content": [{"type": "text", "text": "ok"}], "isError": False}
        self._reply(200, json.dumps(answer).encode(), ctype="application/json")

    def _reply(self, status: int, body: bytes, *, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Upstream)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def table(upstream: str) -> dict[str, Any]:
    def route(sandbox: str, forks: bool, faults: list[dict[str, Any]]) -> dict[str, Any]:
        urls = {"web": upstream, "tools": upstream} if forks else {}
        return {"sandbox": sandbox, "forks": urls, "faults": faults}

    return {
        "baggageKey": "sandbox",
        "version": "record",
        "services": [
            {"name": "web", "protocol": "http", "routerPort": free_port(), "baseline": upstream},
            {"name": "tools", "protocol": "mcp", "routerPort": free_port(), "baseline": upstream},
        ],
        "routes": {
            KEYS["pr-1"]: route("pr-1", True, []),
            KEYS["pr-2"]: route("pr-2", True, FAULTS),
            KEYS["pr-3"]: route("pr-3", False, []),
        },
    }


def started(tmp: Path, upstream: str, *extra: str) -> tuple[Router, int, Path]:
    """A router (and the `tools` service's port, and its records file)."""
    routes = table(upstream)
    records = tmp / "records.jsonl"
    router = start_router(tmp, routes, "--record-file", str(records), *extra)
    tools = routes["services"][1]["routerPort"]
    poll.port_open(tools, timeout=15)
    return router, tools, records


@pytest.fixture(scope="module")
def recorded(
    upstream: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Router, int, Path]]:
    r = started(tmp_path_factory.mktemp("record"), upstream)
    yield r
    r[0].proc.terminate()
    r[0].proc.wait()


# what the client saw → its record ------------------------------------------------------------
def test_each_record_says_what_its_client_saw(recorded: tuple[Router, int, Path]) -> None:
    router, tools, records = recorded
    web, mcp = router.url, f"http://127.0.0.1:{tools}/mcp"
    seen = {}
    seen["forked"] = httpx.get(f"{web}/a?token=s3cr3t", headers=traced("forked", KEYS["pr-1"]))
    seen["posted"] = httpx.post(f"{web}/b", content=b"x" * 300, headers=traced("posted"))
    seen["long"] = httpx.get(f"{web}/long/{'x' * 100}?q=1", headers=traced("long"))
    seen["unforked"] = httpx.get(f"{web}/c", headers=traced("unforked", KEYS["pr-3"]))
    seen["failed"] = httpx.get(f"{web}/status/503", headers=traced("failed"))
    seen["slowed"] = httpx.get(f"{web}/slowed", headers=traced("slowed", KEYS["pr-2"]))
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "describe_pod", "arguments": {"id": "x"}}}  # fmt: skip
    seen["tool"] = post(mcp, call, traced("tool", KEYS["pr-1"]))
    broken = {**call, "id": 8, "params": {"name": "broken", "arguments": {}}}
    seen["broken"] = post(mcp, broken, {**traced("broken"), "Mcp-Session-Id": "s-" + "7" * 30})
    seen["nope"] = post(
        mcp,
        {"jsonrpc": "2.0", "id": "a1", "method": "nope"},
        {**traced("nope"), "MCP-Protocol-Version": "2025-06-18", "Mcp-Session-Id": "0f" * 18},
    )
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{web}/reset", headers=traced("reset", KEYS["pr-2"]))
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{web}/cut", headers=traced("cut"))
    got = poll.until(lambda: by_name(records), lambda r: len(r) >= 11, timeout=10,
                     what="the eleven requests' records")  # fmt: skip

    for name, response in seen.items():  # status and bytes, as the client got them
        assert got[name]["status"] == response.status_code, name
        assert got[name]["bytes_out"] == len(response.content), name
        assert got[name]["method"] == response.request.method, name
    assert got["posted"]["bytes_in"] == 300 and got["tool"]["bytes_in"] == len(json.dumps(call))
    assert where(got["forked"]) == ("web", "pr-1", KEYS["pr-1"], "sandbox")
    assert where(got["posted"]) == ("web", "", "", "baseline")
    assert where(got["unforked"]) == ("web", "pr-3", KEYS["pr-3"], "baseline")
    assert where(got["tool"]) == ("tools", "pr-1", KEYS["pr-1"], "sandbox")
    assert [got[n]["error"] for n in ("forked", "posted", "failed", "tool", "broken", "nope")] \
        == ["", "", "http_5xx", "", "tool_error", "jsonrpc"]  # fmt: skip
    assert facts(got["tool"]) == ("tools/call", "describe_pod", "7")
    assert facts(got["broken"]) == ("tools/call", "broken", "8")
    assert facts(got["nope"]) == ("nope", None, '"a1"')
    assert facts(got["forked"]) == (None, None, None)
    # the path without its query, cut at record.PATH bytes; a session id up to SESSION bytes
    assert [got[n]["path"] for n in ("forked", "posted", "tool")] == ["/a", "/b", "/mcp"]
    assert got["long"]["path"] == f"/long/{'x' * 100}"[:40]
    assert "s3cr3t" not in json.dumps(got["forked"])
    assert got["broken"]["session"] == "s-" + "7" * 30
    assert got["nope"]["session"] is None  # 36 bytes: past record.SESSION, left out
    assert got["tool"]["session"] is None
    # a JSON-RPC error's code; the MCP protocol version the request named
    assert (got["nope"]["rpc_code"], got["nope"]["protocol"]) == (-32601, "2025-06-18")
    assert (got["broken"]["rpc_code"], got["tool"]["protocol"]) == (None, None)
    assert not any(got[n]["injected"] or got[n]["faults"] for n in ("forked", "tool", "nope"))

    reset, cut, slowed = got["reset"], got["cut"], got["slowed"]
    assert (reset["status"], reset["error"], reset["bytes_out"]) == (0, "transport", 0)
    assert reset["injected"] and reset["faults"] == [{"kind": "reset", "id": "rst"}]
    assert (cut["status"], cut["error"], cut["bytes_out"]) == (200, "transport", 10)
    assert not cut["injected"]
    assert slowed["injected"] and slowed["faults"] == [{"kind": "latency", "id": "slowed"}]
    assert slowed["error"] == "" and slowed["duration"] >= 0.05  # (never sooner: faults.py)
    assert 0 < slowed["injected_at"] < slowed["duration"]  # the latency began, then the answer


def test_a_client_that_leaves_is_recorded_as_far_as_it_went(
    recorded: tuple[Router, int, Path],
) -> None:
    router, _, records = recorded
    for name, path in (("left-early", "/sleep"), ("left-mid", "/drip")):
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\ntraceparent: 00-{trace_id(name)}-"
        with socket.create_connection(("127.0.0.1", router.port), timeout=10) as s:
            s.sendall(f"{request}00f067aa0ba902b7-01\r\n\r\n".encode())
            if path == "/drip":
                got = b""
                while not got.endswith(b"0123456789"):
                    got += s.recv(100)
    got = poll.until(lambda: by_name(records), lambda r: {"left-early", "left-mid"} <= set(r),
                     timeout=10, what="the records of the requests whose clients left")  # fmt: skip
    early, mid = got["left-early"], got["left-mid"]
    assert (early["status"], early["bytes_out"], early["error"]) == (0, 0, "transport")
    assert (mid["status"], mid["bytes_out"], mid["error"]) == (200, 10, "")


def test_the_access_log_keeps_its_format(recorded: tuple[Router, int, Path]) -> None:
    router, _, _ = recorded
    httpx.get(f"{router.url}/fmt", headers=traced("fmt", KEYS["pr-1"]))
    entry = poll.until(lambda: access_log.entries(router.log, trace_id=trace_id("fmt")),
                       timeout=10, what="the line")[0]  # fmt: skip
    assert set(entry) == {"time", "service", "route", "method", "status", "ms", "bytesIn",
                          "bytesOut", "traceId"}  # fmt: skip
    assert (entry["route"], entry["service"], entry["status"]) == ("sandbox=pr-1", "web", 200)


# the telemetry process --------------------------------------------------------------------
def test_the_telemetry_process_is_a_fork_sharing_the_routers_pages(
    recorded: tuple[Router, int, Path],
) -> None:
    """Forked before the router's loop: the same command line (no `-m
    sandboxd_router.telemetry` spawn), and the interpreter's heap held once, copy-on-write."""
    router, _, _ = recorded
    child = telemetry_of(router)
    assert cmdline(child) == cmdline(router.proc.pid)
    if os.geteuid() != 0:
        pytest.skip("the page frames in /proc/PID/pagemap are shown to root only")
    shared = anonymous_frames(child) & anonymous_frames(router.proc.pid)
    assert len(shared) * os.sysconf("SC_PAGE_SIZE") > 4 << 20


def test_a_killed_telemetry_process_is_started_again(upstream: str, tmp_path: Path) -> None:
    router, _, records = started(tmp_path, upstream)
    try:
        # the decision the requests after the restart take is made (its names' ids kept on it)
        httpx.get(f"{router.url}/before", headers=traced("before", KEYS["pr-1"]))
        poll.until(lambda: access_log.entries(router.log, trace_id=trace_id("before")),
                   timeout=10, what="the line of the request before the restart")  # fmt: skip
        first = telemetry_of(router)
        os.kill(first, signal.SIGKILL)
        second = poll.until(lambda: telemetry_of(router, missing_ok=True),
                            lambda pid: pid not in (0, first), timeout=10,
                            what="a new telemetry process")  # fmt: skip
        # (spawned: by now the router runs a loop and threads, which a fork would copy)
        assert b"sandboxd_router.telemetry" in cmdline(second)
        for i in range(5):
            httpx.get(f"{router.url}/after/{i}", headers=traced(f"after{i}", KEYS["pr-1"]))
        poll.until(lambda: access_log.entries(router.log, trace_id=trace_id("after0")),
                   timeout=10, what="the line of a request after the restart")  # fmt: skip
        assert "telemetry process exited" in (tmp_path / "router.err").read_text()
        assert telemetry_of(router) == second
        router.proc.send_signal(signal.SIGTERM)  # it is stopped last, its last lines written
        assert router.proc.wait(timeout=30) == 0
        logged = {e["traceId"] for e in access_log.entries(router.log)}
        assert {trace_id(f"after{i}") for i in range(5)} <= logged
        after = {n: r for n, r in by_name(records).items() if n.startswith("after")}
        assert len(after) == 5 and {r["sandbox"] for r in after.values()} == {"pr-1"}
    finally:
        router.proc.terminate()
        router.proc.wait()


def test_a_graceful_stop_keeps_the_last_lines(upstream: str, tmp_path: Path) -> None:
    router, _, records = started(tmp_path, upstream)
    for i in range(20):
        httpx.get(f"{router.url}/last/{i}", headers=traced(f"last{i}"))
    router.proc.send_signal(signal.SIGTERM)
    assert router.proc.wait(timeout=30) == 0
    logged = {e["traceId"] for e in access_log.entries(router.log)}
    assert {trace_id(f"last{i}") for i in range(20)} <= logged
    assert len(by_name(records)) == 20


def test_the_ring_wraps_and_the_loss_is_counted(upstream: str, tmp_path: Path) -> None:
    """A stopped reader and 10 requests into 4 slots: the newest 3 are read (the slot the
    writer would write next is never trusted), 7 are lost and said so. (A record is written
    as its response ends: the last one may come after the reader woke, which then reads the
    newest 3 of 9, loses 6, and reads the 10th after.)"""
    router, _, records = started(tmp_path, upstream, "--record-slots", "4")
    try:
        reader = telemetry_of(router)
        os.kill(reader, signal.SIGSTOP)
        try:
            for i in range(10):
                httpx.get(f"{router.url}/wrap/{i}", headers=traced(f"wrap{i}"))
        finally:
            os.kill(reader, signal.SIGCONT)
        err = tmp_path / "router.err"
        said = poll.until(
            lambda: LOST.findall(err.read_text()), timeout=10, what="the loss, logged"
        )
        lost = int(said[0])
        assert lost in (6, 7), said
        got = poll.until(lambda: by_name(records), lambda r: len(r) >= 10 - lost, timeout=10)
        newest = [f"wrap{i}" for i in range(lost, 10)]
        assert sorted(got) == newest
        assert [got[name]["status"] for name in newest] == [200] * len(newest)
        assert LOST.findall(err.read_text()) == said  # (no other loss, later)
    finally:
        router.proc.terminate()
        router.proc.wait()


@pytest.mark.parametrize("given", ["environ", "argv"])
def test_the_token_is_in_neither_argv_nor_environ_of_the_telemetry_process(
    tmp_path: Path, given: str
) -> None:
    """The telemetry process is a fork, whose /proc shows the router's argv and environment
    as they were given: the router overwrites the token there (its own /proc shows none
    either), then forks; one started again is spawned without it."""
    token = "t0ken-never-in-proc-" + os.urandom(4).hex()
    admin = free_port()
    env = {**os.environ, "SANDBOXD_TOKEN": token} if given == "environ" else dict(os.environ)
    argv = [sys.executable, "-m", "sandboxd_router", "--control-url",
            f"http://127.0.0.1:{free_port()}", "--admin-port", str(admin), "--access-log", "off"]  # fmt: skip
    if given == "argv":
        argv += ["--token", token]
    with (tmp_path / "router.err").open("ab") as err:
        proc = subprocess.Popen(argv, stderr=err, env=env)
    try:
        poll.port_open(admin, timeout=15)
        first = poll.until(lambda: children(proc.pid), timeout=10, what="the telemetry process")[0]
        for pid in (proc.pid, first):
            assert_hidden(token, pid)
        os.kill(first, signal.SIGKILL)
        second = poll.until(lambda: children(proc.pid), lambda found: found and found != [first],
                            timeout=10, what="the telemetry process, started again")[0]  # fmt: skip
        assert_hidden(token, second)
    finally:
        proc.terminate()
        proc.wait()


def test_record_off_records_nothing(upstream: str, tmp_path: Path) -> None:
    router, _, records = started(tmp_path, upstream, "--record", "off")
    try:
        response = httpx.get(f"{router.url}/off", headers=traced("off"))
        assert response.status_code == 200
        assert children(router.proc.pid) == []
    finally:
        router.proc.terminate()
        router.proc.wait()
    assert not records.exists() and not router.log.exists()


# helpers ------------------------------------------------------------------------------------
def trace_id(name: str) -> str:
    """A trace id made of `name` (at most 16 ASCII characters), zero-padded."""
    return name.encode().hex().ljust(32, "0")


def traced(name: str, key: str | None = None) -> dict[str, str]:
    headers = {"traceparent": f"00-{trace_id(name)}-00f067aa0ba902b7-01"}
    if key is not None:
        headers["baggage"] = f"sandbox={key}"
    return headers


def post(url: str, message: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, content=json.dumps(message).encode(),
                      headers={**headers, "content-type": "application/json",
                               "accept": "application/json, text/event-stream"})  # fmt: skip


def by_name(records: Path) -> dict[str, dict[str, Any]]:
    """The records so far, by the name their traceparent was made of."""
    names = {}
    for entry in access_log.entries(records):
        tp = entry["traceparent"]
        if tp:
            names[bytes.fromhex(tp.split("-")[1]).split(b"\0")[0].decode()] = entry
    return names


def where(record: dict[str, Any]) -> tuple[str, str, str, str]:
    return record["service"], record["sandbox"], record["routing_key"], record["route"]


def facts(record: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    return record["rpc_method"], record["tool"], record["rpc_id"]


def children(pid: int) -> list[int]:
    """The telemetry processes `pid` started (alive): its only children."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def assert_hidden(token: str, pid: int) -> None:
    assert token.encode() not in cmdline(pid)
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except PermissionError:
        return  # non-dumpable (`no_dumps`): nobody else of our uid can read it
    assert token.encode() not in environ  # (a reader with CAP_SYS_PTRACE, such as root, can)


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def anonymous_frames(pid: int) -> set[int]:
    """The physical pages of `pid`'s private anonymous memory (the heap, the interpreter's
    arenas) resident now: two processes share some only if one is the other's fork."""
    page = os.sysconf("SC_PAGE_SIZE")
    frames = set()
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            fields = line.split()
            if fields[1] != "rw-p" or fields[4] != "0":
                continue
            start, end = (int(a, 16) for a in fields[0].split("-"))
            pagemap.seek(start // page * 8)
            for (entry,) in struct.iter_unpack("<Q", pagemap.read((end - start) // page * 8)):
                if entry >> 63:
                    frames.add(entry & ((1 << 55) - 1))
    return frames


def telemetry_of(router: Router, *, missing_ok: bool = False) -> int:
    found = children(router.proc.pid)
    if not found and missing_ok:
        return 0
    assert len(found) == 1, found
    return found[0]
