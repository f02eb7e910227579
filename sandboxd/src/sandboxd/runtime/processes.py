"""Process groups on Linux: spawn, tell alive from dead (pid reuse included), stop, find.

Every process sandboxd starts carries marker variables in its environment (`SANDBOXD_OWNER`
and friends), which `/proc/<pid>/environ` shows to its owner. After a crash, a new sandboxd
scans `/proc` for its owner id and so finds exactly the processes an earlier run started,
whether or not it had time to record them anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
MAX_ENVIRON = 1 << 20  # sandboxd puts its markers first; a fork may grow the rest at will


@dataclass(frozen=True, slots=True)
class ProcInfo:
    pid: int
    pgid: int
    state: str
    start_ticks: int


def proc_info(pid: int) -> ProcInfo | None:
    """None for a process that is gone, or whose stat cannot be read as the kernel writes it."""
    try:
        raw = (PROC / str(pid) / "stat").read_text(errors="replace")
        # The command name (field 2) is the process's to choose, spaces and parentheses
        # included: the kernel's own fields start after the last ')'.
        fields = raw[raw.rindex(")") + 2 :].split()
        return ProcInfo(pid=pid, pgid=int(fields[2]), state=fields[0], start_ticks=int(fields[19]))
    except (OSError, ValueError, IndexError):
        return None


def is_running(pid: int, start_ticks: int) -> bool:
    """The same process (not a reused pid) exists and is not a zombie."""
    info = proc_info(pid)
    return info is not None and info.state != "Z" and info.start_ticks == start_ticks


def all_pids() -> Iterator[int]:
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def group_alive(pgid: int) -> bool:
    """Any non-zombie process left in the group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(
        (info := proc_info(pid)) is not None and info.pgid == pgid and info.state != "Z"
        for pid in all_pids()
    )


def environ(pid: int) -> dict[str, str]:
    """A process's environment as it started it (or rewrote it since: nothing here is proof)."""
    try:
        with (PROC / str(pid) / "environ").open("rb") as f:
            raw = f.read(MAX_ENVIRON)
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def find_marked(marker: str, value: str) -> list[tuple[ProcInfo, dict[str, str]]]:
    """Processes whose environment has `marker=value` (ours only: others' environ is closed)."""
    found = []
    own = os.getpid()
    for pid in all_pids():
        if pid == own:
            continue
        env = environ(pid)
        if env.get(marker) != value:
            continue
        info = proc_info(pid)
        if info is not None and info.state != "Z":
            found.append((info, env))
    return found


def spawn(
    argv: tuple[str, ...],
    *,
    env: Mapping[str, str],
    cwd: str | None,
    log: Path,
    stdin: bytes | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` as the leader of a new process group (session), output appended to `log`,
    reading `stdin` (else /dev/null): a way in for what must not be in its argv or environ."""
    log.parent.mkdir(parents=True, exist_ok=True)
    source = _memfile(stdin) if stdin is not None else subprocess.DEVNULL
    # no symlink followed (a process that could swap its log for one would have us append to
    # the link's target); private to sandboxd's user
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with os.fdopen(os.open(log, flags, 0o600), "ab") as out:
            return subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=source,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
    finally:
        if source != subprocess.DEVNULL:
            os.close(source)


def _memfile(data: bytes) -> int:
    """An anonymous file holding `data`, at offset 0 (it never blocks, unlike a pipe)."""
    fd = os.memfd_create("sandboxd-stdin", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def stop_group(
    pgid: int, *, grace: float, popen: subprocess.Popen[bytes] | None = None
) -> bool:
    """SIGTERM the group, SIGKILL what is left after `grace` seconds; True once it is gone."""
    _signal_group(pgid, signal.SIGTERM)
    for sig_deadline, sig in ((grace, signal.SIGKILL), (5.0, None)):
        waited = 0.0
        while waited < sig_deadline:
            if popen is not None:
                popen.poll()  # reap our own child so it does not linger as a zombie
            if not group_alive(pgid):
                if popen is not None:
                    popen.poll()  # it may have exited since the poll above: a zombie now
                return True
            await asyncio.sleep(0.02)
            waited += 0.02
        if sig is not None:
            _signal_group(pgid, sig)
    if popen is not None:
        popen.poll()
    return not group_alive(pgid)


@dataclass(frozen=True, slots=True)
class LogTail:
    data: bytes
    size: int

    @classmethod
    def read(cls, path: Path, *, lines: int, window: int = 1 << 20) -> LogTail:
        """The last `lines` lines, reading at most `window` bytes from the end."""
        try:
            with path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - window))
                data = f.read()
        except OSError:
            return cls(b"", 0)
        kept = data.splitlines(keepends=True)[-lines:] if lines > 0 else []
        return cls(b"".join(kept), size)


def read_from(path: Path, offset: int, limit: int) -> tuple[bytes, int]:
    """Up to `limit` bytes of a log from `offset` (clamped to the file), and where they end."""
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        start = min(max(offset, 0), size)
        f.seek(start)
        data = f.read(limit)
    return data, start + len(data)
