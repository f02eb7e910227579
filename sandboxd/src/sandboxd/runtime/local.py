"""The local runtime: each fork is a child process group on a free loopback port.

Observed state is the processes themselves: on start, the runtime scans `/proc` for processes
carrying its owner id and adopts the forks whose sealed markers check out (see `markers`); a
fork whose plan digest or sandbox uid no longer matches is replaced by the next `apply`, and one
whose markers were tampered with is stopped. A ready fork whose plan changed is replaced
without a gap: the new copy starts beside it, takes its place once healthy, and the old one
is stopped `drain` seconds later (routers have the new upstream by then); a new copy that
never gets healthy leaves the old one serving. A monitor notices forks that die and tells the
reconciler. Forks start confined (see `confine`): they cannot read sandboxd's secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from sandboxd.core.catalog import Catalog
from sandboxd.core.plan import ProcessPlan, RuntimeKind, SandboxPlan, expand
from sandboxd.runtime import processes
from sandboxd.runtime.base import ForkState, ForkStatus, LogChunk, Opened
from sandboxd.runtime.confine import Confinement
from sandboxd.runtime.health import probe
from sandboxd.runtime.markers import OWNER, ROLE, SERVICE, BadMarkers, ForkMarkers, load_key
from sandboxd.settings import Settings

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_LOG_READ = 1 << 20
__all__ = [
    "HOST", "OWNER", "ROLE", "SERVICE", "LocalRuntime", "clean_environ", "open_runtime", "owner_id",
]  # fmt: skip


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    catalog: Catalog,
    on_change: Callable[[str], None],
    confinement: Confinement,
) -> AsyncIterator[Opened]:
    """Forks as child processes of this one, adopted at start and stopped at close."""
    runtime = LocalRuntime(
        data_dir=settings.data_path,
        stop_grace=settings.stop_grace,
        drain=settings.drain,
        on_change=on_change,
        confinement=confinement,
    )
    try:
        await runtime.start()
        yield Opened(runtime, catalog)
    finally:
        await runtime.close()


def owner_id(data_dir: Path) -> str:
    """Stable per data dir, so two sandboxd instances never adopt each other's processes."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]


def clean_environ() -> dict[str, str]:
    """sandboxd's environment minus its own settings: forks run untrusted PR code and must
    never see the admin token or the database URL."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass(slots=True)
class _Fork:
    sandbox: str
    uid: str
    service: str
    digest: str
    health: str | None
    pid: int
    port: int
    start_ticks: int
    started_at: float
    popen: subprocess.Popen[bytes] | None
    ready: bool = False
    exited: str | None = None  # why it is gone, once it is
    adopted: bool = False
    note: str | None = None  # a warning shown with a running fork

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return processes.is_running(self.pid, self.start_ticks)

    def status(self, replacing: ForkStatus | None = None) -> ForkStatus:
        if self.exited is not None:
            state = ForkState.EXITED
        else:
            state = ForkState.READY if self.ready else ForkState.STARTING
        return ForkStatus(
            service=self.service,
            state=state,
            upstream=f"http://{HOST}:{self.port}",
            pid=self.pid,
            started_at=self.started_at,
            message=self.exited or self.note,
            adopted=self.adopted,
            replacing=replacing,
        )


class LocalRuntime:
    kind: ClassVar[RuntimeKind] = "local"
    poll_interval: ClassVar[float] = 0.05  # a health probe on loopback is cheap

    def __init__(
        self,
        *,
        data_dir: Path,
        stop_grace: float,
        on_change: Callable[[str], None],
        confinement: Confinement,
        drain: float = 0.5,
    ) -> None:
        self._root = data_dir / "forks"
        self._key_path = data_dir / "fork-seal.key"
        self._key = b""
        self._owner = owner_id(data_dir)
        self._grace = stop_grace
        self._on_change = on_change
        self._confinement = confinement
        self._drain = drain
        self._forks: dict[tuple[str, str], _Fork] = {}
        """The fork that serves, by (sandbox, service)."""
        self._next: dict[tuple[str, str], _Fork] = {}
        """A new copy starting to replace the fork that serves."""
        self._retiring: list[tuple[float, _Fork]] = []
        """Replaced forks, each stopped once its monotonic time has come."""
        self._monitor: asyncio.Task[None] | None = None

    # lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Adopt the forks an earlier run left; stop every marked process that is not one.

        Everything read here comes from processes that run PR code: nothing in it may stop the
        start (a fork that lies is stopped and logged, and the others are still adopted)."""
        self._root.mkdir(parents=True, exist_ok=True)
        self._key = await asyncio.to_thread(load_key, self._key_path)
        found = await asyncio.to_thread(processes.find_marked, OWNER, self._owner)
        forks = [(info, env) for info, env in found if env.get(ROLE) == "fork"]
        leaders = {info.pid for info, _ in forks if info.pid == info.pgid}
        strays: set[int] = set()
        for info, env in forks:
            if info.pid != info.pgid:
                if info.pgid not in leaders:  # a child of a fork whose leader is gone
                    strays.add(info.pgid)
                continue
            problem = self._adopt(info, env)
            if problem is not None:
                log.warning("stopping pid %d: not a fork sandboxd started (%s)", info.pid, problem)
                strays.add(info.pgid)
        await asyncio.gather(*(processes.stop_group(g, grace=self._grace) for g in strays))
        self._monitor = asyncio.create_task(self._watch(), name="local-runtime-monitor")

    def _adopt(self, info: processes.ProcInfo, env: Mapping[str, str]) -> str | None:
        """Adopt the fork; None, or why its markers cannot be believed."""
        try:
            marks = ForkMarkers.read(env, key=self._key)
        except BadMarkers as e:
            return str(e)
        if (marks.sandbox, marks.service) in self._forks:
            return f"a second process for fork {marks.sandbox}/{marks.service}"
        self._forks[(marks.sandbox, marks.service)] = _Fork(
            sandbox=marks.sandbox,
            uid=marks.uid,
            service=marks.service,
            digest=marks.digest,
            health=marks.health,
            pid=info.pid,
            port=marks.port,
            start_ticks=info.start_ticks,
            started_at=time.time(),
            popen=None,
            adopted=True,
            note=self._unconfined_note(),
        )
        log.info("adopted fork %s/%s (pid %d)", marks.sandbox, marks.service, info.pid)
        return None

    def _unconfined_note(self) -> str | None:
        why = self._confinement.unconfined
        return None if why is None else f"runs unconfined ({why}): it can read sandboxd's secrets"

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        await asyncio.gather(*(self._stop_fork(f) for f in self._all()))
        self._forks.clear()
        self._next.clear()
        self._retiring.clear()

    def _all(self, sandbox: str | None = None) -> list[_Fork]:
        """Every fork process held (of `sandbox`): serving, starting to replace, retiring."""
        forks = [*self._forks.values(), *self._next.values(), *(f for _, f in self._retiring)]
        return [f for f in forks if sandbox is None or f.sandbox == sandbox]

    # the Runtime interface ---------------------------------------------------------------
    async def sandboxes(self) -> set[str]:
        names = {f.sandbox for f in self._all()}
        if self._root.is_dir():
            names |= {p.name for p in self._root.iterdir() if p.is_dir()}
        return names

    async def apply(self, plan: SandboxPlan) -> list[ForkStatus]:
        planned = {p.service for p in plan.forks}
        for held in [*self._forks.values(), *self._next.values()]:
            if held.sandbox == plan.name and held.service not in planned:
                await self._stop_fork(held)
        serving: list[_Fork] = []
        for process in plan.forks:
            key = (plan.name, process.service)
            fork = self._forks.get(key)
            if fork is not None and fork.uid != plan.uid:  # another sandbox of that name
                await self._stop_fork(fork)
                fork = None
            if fork is not None and fork.digest != process.digest:
                if fork.ready and fork.exited is None:
                    await self._replace(plan, process)  # it serves on meanwhile
                else:  # it serves nothing: no gap to avoid
                    await self._stop_fork(fork)
                    fork = None
            elif fork is not None and key in self._next:  # (planned again as it runs)
                await self._stop_fork(self._next[key])
            if fork is None:  # a new copy already starting for this plan, or a new one
                fork = await self._promote_starting(plan, process)
            serving.append(fork or self._spawn(plan, process, self._forks))
        starting = [self._next[k] for k in self._keys(serving) if k in self._next]
        await asyncio.gather(*(self._check(f) for f in [*serving, *starting]))
        return [self._status(fork) for fork in serving]

    async def _replace(self, plan: SandboxPlan, process: ProcessPlan) -> None:
        """A new copy of the fork for `process` started beside the one that serves (a copy
        started for an earlier plan is stopped first)."""
        starting = self._next.get((plan.name, process.service))
        if starting is not None and (starting.uid, starting.digest) != (plan.uid, process.digest):
            await self._stop_fork(starting)
            starting = None
        if starting is None:
            self._spawn(plan, process, self._next)

    async def _promote_starting(self, plan: SandboxPlan, process: ProcessPlan) -> _Fork | None:
        """The new copy already starting for `process`, made the fork (the one it was to
        replace is gone); None when there is none of this plan."""
        starting = self._next.pop((plan.name, process.service), None)
        if starting is None:
            return None
        if (starting.uid, starting.digest) != (plan.uid, process.digest):
            self._next[(plan.name, process.service)] = starting  # (so that its stop finds it)
            await self._stop_fork(starting)
            return None
        self._forks[(plan.name, process.service)] = starting
        return starting

    def _status(self, fork: _Fork) -> ForkStatus:
        """The fork's status; a ready new copy takes its place first (the old one retires)."""
        key = (fork.sandbox, fork.service)
        starting = self._next.get(key)
        if starting is None:
            return fork.status()
        if not (starting.ready and starting.exited is None):
            return fork.status(replacing=starting.status())
        del self._next[key]
        self._forks[key] = starting
        self._retiring.append((time.monotonic() + self._drain, fork))
        log.info("fork %s/%s: pid %d replaces pid %d", *key, starting.pid, fork.pid)
        return starting.status()

    @staticmethod
    def _keys(forks: list[_Fork]) -> list[tuple[str, str]]:
        return [(f.sandbox, f.service) for f in forks]

    async def stop(self, name: str, *, keep_logs: bool = False) -> bool:
        results = await asyncio.gather(*(self._stop_fork(f) for f in self._all(name)))
        if not all(results):
            return False
        if not keep_logs:
            await asyncio.to_thread(shutil.rmtree, self._root / name, True)
        return True

    async def read_log(
        self, name: str, service: str, *, offset: int | None, tail: int | None
    ) -> LogChunk | None:
        path = self._log_path(name, service)
        if not path.is_file():
            return None
        if offset is None:
            tailed = await asyncio.to_thread(processes.LogTail.read, path, lines=tail or 100)
            return LogChunk(tailed.data, tailed.size)
        data, end = await asyncio.to_thread(processes.read_from, path, offset, MAX_LOG_READ)
        return LogChunk(data, end)

    def no_log(self, name: str, service: str) -> str:
        return f"no log for {name}/{service} (not started, or removed)"

    # internals ---------------------------------------------------------------------------
    def _log_path(self, name: str, service: str) -> Path:
        return self._root / name / f"{service}.log"

    def _spawn(
        self, plan: SandboxPlan, process: ProcessPlan, into: dict[tuple[str, str], _Fork]
    ) -> _Fork:
        port = free_port()
        marks = ForkMarkers(
            plan.name, plan.uid, process.service, process.digest, port, process.health
        )
        ours = {OWNER: self._owner, ROLE: "fork", **marks.env(self._key)}
        # the markers first (an adoption reads only the start of a long environ), and last (so
        # they win over anything of the same name)
        env = ours | clean_environ() | dict(process.env) | ours
        argv = expand(process.argv, env)
        launch = self._confinement.wrap(argv, env=env, cwd=process.workdir)
        fork = _Fork(
            sandbox=plan.name,
            uid=plan.uid,
            service=process.service,
            digest=process.digest,
            health=process.health,
            pid=0,
            port=port,
            start_ticks=0,
            started_at=time.time(),
            popen=None,
            note=self._unconfined_note(),
        )
        into[(plan.name, process.service)] = fork
        try:
            popen = processes.spawn(
                launch.argv,
                env=launch.env,
                cwd=launch.cwd,
                log=self._log_path(plan.name, process.service),
                stdin=launch.stdin,
            )
        except OSError as e:
            fork.exited = f"cannot start {argv[0]!r}: {e.strerror or e}"
            return fork
        info = processes.proc_info(popen.pid)
        fork.pid, fork.popen = popen.pid, popen
        fork.start_ticks = info.start_ticks if info else 0
        log.info(
            "started fork %s/%s (pid %d, port %d)", plan.name, process.service, popen.pid, port
        )
        return fork

    async def _check(self, fork: _Fork) -> None:
        if fork.exited is not None:
            return
        if not fork.alive():
            fork.exited = self._exit_message(fork)
            return
        if not fork.ready:
            fork.ready = await probe(HOST, fork.port, fork.health)

    def _exit_message(self, fork: _Fork) -> str:
        code = fork.popen.returncode if fork.popen is not None else None
        tail = processes.LogTail.read(self._log_path(fork.sandbox, fork.service), lines=3)
        text = tail.data.decode(errors="replace").strip().replace("\n", " | ")[-300:]
        # the fork's own output: no escape codes into messages that terminals show
        last = "".join(c if c.isprintable() else "?" for c in text)
        how = f"exited with code {code}" if code is not None else "is gone"
        return f"the process {how}" + (f"; last output: {last}" if last else "")

    async def _stop_fork(self, fork: _Fork) -> bool:
        done = fork.pid == 0 or await processes.stop_group(
            fork.pid, grace=self._grace, popen=fork.popen
        )
        if done:
            key = (fork.sandbox, fork.service)
            for held in (self._forks, self._next):
                if held.get(key) is fork:
                    del held[key]
            self._retiring = [(t, f) for t, f in self._retiring if f is not fork]
        return done

    async def _watch(self) -> None:
        """Tell the reconciler when a running fork dies, so its sandbox fails promptly."""
        while True:
            await asyncio.sleep(0.5)
            for fork in [*self._forks.values(), *self._next.values()]:
                if fork.exited is None and not fork.alive():
                    fork.exited = self._exit_message(fork)
                    self._on_change(fork.sandbox)
            now = time.monotonic()
            due = [fork for at, fork in self._retiring if at <= now]
            if due:
                await asyncio.gather(*(self._stop_fork(f) for f in due))
