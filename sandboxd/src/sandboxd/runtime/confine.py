"""Confinement for the processes that run PR code (forks) and the catalog's baselines.

A fork runs as sandboxd's own user, so without more it could read everything sandboxd can: the
admin token and database in the data dir, and the environment and memory of sandboxd and the
router through `/proc`. The launcher here closes that, in the process that then becomes the fork:

1. a new user namespace (our uid and gid mapped to themselves, so files keep their owners) and
   a new mount namespace, with mounts made private;
2. each hidden directory (the data dir, the admin token's directory) covered by an empty
   read-only tmpfs;
3. every capability dropped (bounding, ambient, effective, permitted, inheritable) and
   no_new_privs set, so the cover cannot be unmounted; in a user namespace of its own, a
   nested one gets the cover locked by the kernel (MNT_LOCKED);
4. the working directory entered after the cover (an old one could reach under it), then exec.

A process in another user namespace cannot open `/proc/<pid>/{environ,mem,fd,root,cwd}` of any
process outside it (that takes CAP_SYS_PTRACE over the target's namespace), so sandboxd, the
router, baselines, other forks and the user's shell are out of reach. sandboxd, which created
the namespace, keeps that right over the fork: adoption after a restart reads its environ.

The launcher runs as `python -I -m sandboxd.runtime.confine` with only the markers in its
environment (a PR's `LD_PRELOAD` or `PYTHONPATH` must not run before the confinement) and reads
what to exec as JSON on stdin; the exec keeps the pid sandboxd recorded and the process group.
It needs only the standard library: it must start fast and import nothing of the PR's.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REC, MS_PRIVATE = 0x4000, 0x40000
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
CAPABILITY_VERSION_3 = 0x20080522
EXIT_CONFINE, EXIT_EXEC = 126, 127
PROG = "sandboxd-confine"


class ConfineError(OSError):
    """A step of the confinement failed; the message names the step and the kernel's answer."""


@dataclass(frozen=True, slots=True)
class Launch:
    """What to exec once confined."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str | None
    hide: tuple[str, ...]

    def encode(self) -> bytes:
        body = {"argv": self.argv, "env": dict(self.env), "cwd": self.cwd, "hide": self.hide}
        return json.dumps(body).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Launch:
        body = json.loads(raw)
        return cls(tuple(body["argv"]), body["env"], body["cwd"], tuple(body["hide"]))


# the parent's side ----------------------------------------------------------------------------
class ConfinementUnavailable(RuntimeError):
    """This machine cannot confine forks, and running them unconfined was not allowed."""


@dataclass(frozen=True, slots=True)
class Spawn:
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str | None
    stdin: bytes | None


@dataclass(frozen=True, slots=True)
class Confinement:
    """How sandboxd starts the processes that run PR or catalog code."""

    hide: tuple[Path, ...]
    unconfined: str | None = None
    """Why processes run unconfined (the operator allowed it), or None: they are confined."""

    def wrap(self, argv: tuple[str, ...], *, env: Mapping[str, str], cwd: str | None) -> Spawn:
        if self.unconfined is not None:
            return Spawn(argv, env, cwd, None)
        # The launcher's own environment: the markers (a restart finds a fork even before its
        # exec), nothing the dynamic loader or Python would act on.
        markers = {k: v for k, v in env.items() if k.startswith("SANDBOXD_") or k == "PORT"}
        spec = Launch(argv, env, cwd, tuple(str(p) for p in self.hide))
        return Spawn(launcher_argv(), markers, None, spec.encode())

    @classmethod
    def detect(cls, hide: Sequence[Path], *, allow_unconfined: bool) -> Confinement:
        """Confined when this machine can (tried for real); else ConfinementUnavailable, or
        unconfined with the reason when the operator allowed that."""
        problem = probe(hide)
        if problem is None:
            return cls(tuple(hide))
        if not allow_unconfined:
            raise ConfinementUnavailable(
                f"forks cannot be confined on this machine ({problem}): PR code would run "
                "with sandboxd's rights and could read the admin token. Allow unprivileged "
                "user namespaces (e.g. sysctl kernel.apparmor_restrict_unprivileged_userns=0; "
                "in a container, a seccomp and AppArmor profile that permit unshare and mount), "
                "or accept the risk with --allow-unconfined-forks "
                "(SANDBOXD_ALLOW_UNCONFINED_FORKS=1)"
            )
        return cls(tuple(hide), unconfined=problem)


def launcher_argv() -> tuple[str, ...]:
    """-I: no PYTHON* variables, no user site, no current directory on the path."""
    return (sys.executable, "-I", "-m", "sandboxd.runtime.confine")


def probe(hide: Sequence[Path]) -> str | None:
    """None when this machine confines processes (tried for real), else why not."""
    spec = Launch(argv=(), env={}, cwd=None, hide=tuple(str(p) for p in hide))
    try:
        done = subprocess.run(
            [*launcher_argv(), "--probe"],
            input=spec.encode(),
            capture_output=True,
            env={},
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"the launcher did not run: {e}"
    if done.returncode == 0:
        return None
    return done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"


def no_dumps() -> None:
    """Make this process non-dumpable: then a process of the same uid without CAP_SYS_PTRACE
    cannot open its /proc files (environ, mem, fd). Reset by exec, so children are unaffected."""
    _call("prctl(PR_SET_DUMPABLE)", _libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0))


# the child's side -----------------------------------------------------------------------------
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _call(step: str, result: int) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise ConfineError(errno, f"{step}: {os.strerror(errno)}")


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text)
    except OSError as e:
        raise ConfineError(e.errno, f"writing {path}: {e.strerror}") from e


def enter_namespaces(libc: ctypes.CDLL) -> None:
    uid, gid = os.geteuid(), os.getegid()
    _call("unshare(user and mount namespaces)", libc.unshare(CLONE_NEWUSER | CLONE_NEWNS))
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
    _call("making mounts private", libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None))


def cover(libc: ctypes.CDLL, hide: Sequence[str]) -> None:
    """An empty read-only tmpfs over each directory that exists (a missing one hides nothing)."""
    flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    for path in hide:
        if os.path.isdir(path):
            target = os.fsencode(path)
            _call(f"covering {path}", libc.mount(b"tmpfs", target, b"tmpfs", flags, b"mode=555"))


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def drop_capabilities(libc: ctypes.CDLL) -> None:
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last + 1):
        _call(f"dropping capability {cap}", libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0))
    _call("clearing ambient capabilities",
          libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0))  # fmt: skip
    _call("setting no_new_privs", libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    header = _CapHeader(CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()  # all zero: nothing effective, permitted or inheritable
    _call("capset", libc.capset(ctypes.byref(header), data))


def confine(hide: Sequence[str]) -> None:
    libc = _libc()
    enter_namespaces(libc)
    cover(libc, hide)
    drop_capabilities(libc)


def main() -> int:
    spec = Launch.decode(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the fork's stdin is /dev/null, as without confinement
    os.close(devnull)
    try:
        confine(spec.hide)
        # entered again by path after the cover: a directory held from before would reach under
        os.chdir(spec.cwd or os.getcwd())
    except OSError as e:
        print(f"{PROG}: cannot confine the process: {e.strerror or e}", file=sys.stderr)
        return EXIT_CONFINE
    if "--probe" in sys.argv[1:]:
        return 0
    try:
        os.execvpe(spec.argv[0], list(spec.argv), dict(spec.env))  # noqa: S606 (argv, no shell)
    except OSError as e:
        print(f"{PROG}: cannot start {spec.argv[0]!r}: {e.strerror or e}", file=sys.stderr)
    return EXIT_EXEC


if __name__ == "__main__":
    sys.exit(main())
