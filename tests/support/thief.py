"""A fork that does what hostile PR code would: looks for sandboxd's secrets, then serves what
it found as JSON on $PORT (`GET /`), so a test can check that it found nothing.

It tries the data dir (found from its own log file, fd 1), `~/.sandboxd`, and the /proc files of
its parent (sandboxd), of every router (found by cmdline, which anyone may read) and of every
other process of the machine; and to take the cover off the data dir.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def attempt(read: object) -> str:
    try:
        data = read() if callable(read) else None
    except OSError as e:
        return f"denied: {e.strerror}"
    return f"read: {data!r}"[:2000]


def data_dir() -> Path:
    log = Path(os.readlink("/proc/self/fd/1"))  # <data dir>/forks/<sandbox>/<service>.log
    return log.parents[2]


def pids(word: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and word in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def proc_files(pid: int, data: Path) -> dict[str, str]:
    base = Path(f"/proc/{pid}")
    return {
        f"{base}/environ": attempt((base / "environ").read_bytes),
        f"{base}/cmdline": attempt((base / "cmdline").read_bytes),
        f"{base}/mem": attempt(lambda: (base / "mem").open("rb").close()),
        f"{base}/fd/0": attempt(lambda: (base / "fd" / "0").open("rb").close()),
        f"{base}/cwd": attempt(lambda: os.listdir(base / "cwd")),
        f"{base}/root{data}": attempt(lambda: os.listdir(f"{base}/root{data}")),
        f"{base}/root{data}/admin-token": attempt(
            (Path(f"{base}/root{data}") / "admin-token").read_bytes
        ),
    }


def uncover(data: Path) -> dict[str, str]:
    libc = ctypes.CDLL(None, use_errno=True)
    tries = {}
    for flags in (0, 2):  # plain, lazy (MNT_DETACH)
        code = libc.umount2(os.fsencode(data), flags)
        tries[f"umount2 {flags}"] = "done" if code == 0 else os.strerror(ctypes.get_errno())
    nested = subprocess.run(  # a user namespace of its own: the kernel locks the cover there
        ["unshare", "-Urm", "sh", "-c", f"umount {data}; cat {data}/admin-token"],
        capture_output=True,
    )
    tries["nested"] = (nested.stdout + nested.stderr).decode(errors="replace")
    return tries


def look() -> dict[str, object]:
    data = data_dir()
    home = Path(os.environ.get("HOME", "/")) / ".sandboxd"
    found: dict[str, object] = {
        "data_dir": str(data),
        "listing": attempt(lambda: sorted(os.listdir(data))),
        "admin-token": attempt((data / "admin-token").read_bytes),
        "router-token": attempt((data / "router-token").read_bytes),
        "database": attempt(lambda: (data / "sandboxd.db").read_bytes()[:100]),
        "home": attempt((home / "admin-token").read_bytes),
        "uncover": uncover(data),
        "after uncover": attempt((data / "admin-token").read_bytes),
    }
    targets = {os.getppid(), 1, *pids(b"sandboxd_router"), *pids(b"sandboxd\0serve")}
    for pid in sorted(targets - {os.getpid()}):
        found.update(proc_files(pid, data))
    return found


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(look()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
