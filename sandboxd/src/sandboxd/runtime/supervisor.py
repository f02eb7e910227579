"""Long-running child processes of `sandboxd serve`: the catalog's baselines
(`--start-baseline`) and the embedded router (`--with-router`).

Each is restarted if it dies and stopped on exit. Leftovers of a run that was killed are found by
their owner marker and role and stopped before anything starts, so a restart never meets its
own old processes on the ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import time
from pathlib import Path

from sandboxd.core.plan import ProcessPlan, expand
from sandboxd.runtime import processes
from sandboxd.runtime.confine import Confinement, Spawn
from sandboxd.runtime.health import probe
from sandboxd.runtime.local import HOST, OWNER, ROLE, SERVICE, clean_environ, owner_id

log = logging.getLogger(__name__)


class SupervisorError(RuntimeError):
    """A supervised process did not come up."""


def check_port_free(plan: ProcessPlan) -> None:
    """A port taken by someone else would pass the health probe for a process that failed."""
    if plan.port is None:
        return
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, plan.port))
        except OSError as e:
            raise SupervisorError(
                f"{plan.service}: port {plan.port} is already in use by another process "
                f"({e.strerror}); stop it or change the catalog"
            ) from e


class Supervisor:
    """Runs `plans` as processes of one `role`; a plan with a port is Ready once it answers.

    With a `confinement`, each runs confined (as forks do); else each reads `stdin` (the
    embedded router's token comes that way: never in an environ or argv)."""

    def __init__(
        self,
        *,
        role: str,
        data_dir: Path,
        plans: list[ProcessPlan],
        stop_grace: float,
        confinement: Confinement | None = None,
        stdin: bytes | None = None,
    ) -> None:
        self._role = role
        self._confinement = confinement
        self._stdin = stdin
        self._logs = data_dir / role
        self._owner = owner_id(data_dir)
        self._plans = plans
        self._grace = stop_grace
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._watcher: asyncio.Task[None] | None = None

    async def stop_leftovers(self) -> None:
        """Stop this role's processes that a killed earlier run left (they hold the ports)."""
        for info, env in await asyncio.to_thread(processes.find_marked, OWNER, self._owner):
            if env.get(ROLE) == self._role:
                log.warning("stopping %s %s left by an earlier run", self._role, env.get(SERVICE))
                await processes.stop_group(info.pgid, grace=self._grace)

    async def start(self, *, timeout: float = 60.0) -> None:
        await self.stop_leftovers()
        try:
            for plan in self._plans:
                check_port_free(plan)
                self._spawn(plan)
            await self._wait_healthy(timeout)
        except SupervisorError:
            await self.close()  # never leave the ones that did start behind
            raise
        self._watcher = asyncio.create_task(self._watch(), name=f"{self._role}-watch")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await asyncio.gather(
            *(processes.stop_group(p.pid, grace=self._grace, popen=p) for p in self._procs.values())
        )

    def _spawn(self, plan: ProcessPlan) -> None:
        env = (
            clean_environ()
            | dict(plan.env)
            | {OWNER: self._owner, ROLE: self._role, SERVICE: plan.service}
            | ({"PORT": str(plan.port)} if plan.port is not None else {})
        )
        log_path = self._logs / f"{plan.service}.log"
        argv = expand(plan.argv, env)
        if self._confinement is not None:
            launch = self._confinement.wrap(argv, env=env, cwd=plan.workdir)
        else:
            launch = Spawn(argv, env, plan.workdir, self._stdin)
        try:
            popen = processes.spawn(
                launch.argv, env=launch.env, cwd=launch.cwd, log=log_path, stdin=launch.stdin
            )
        except OSError as e:
            raise SupervisorError(f"{self._role} {plan.service}: cannot start: {e}") from e
        self._procs[plan.service] = popen
        log.info("%s %s started (pid %d, port %s)", self._role, plan.service, popen.pid, plan.port)

    async def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = {p.service: p for p in self._plans}
        while pending:
            for name, plan in list(pending.items()):
                code = self._procs[name].poll()
                if code is not None:
                    tail = processes.LogTail.read(self._logs / f"{name}.log", lines=5)
                    raise SupervisorError(
                        f"{self._role} {name} exited with code {code}: "
                        f"{tail.data.decode(errors='replace').strip()}"
                    )
                if plan.port is None or await probe(HOST, plan.port, plan.health):
                    log.info("%s %s is ready", self._role, name)
                    del pending[name]
            if pending and time.monotonic() > deadline:
                raise SupervisorError(
                    f"{self._role} not ready after {timeout:.0f}s: {sorted(pending)}"
                )
            await asyncio.sleep(0.1)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for plan in self._plans:
                code = self._procs[plan.service].poll()
                if code is not None:
                    log.warning("%s %s exited with %s; restarting", self._role, plan.service, code)
                    try:
                        self._spawn(plan)
                    except SupervisorError as e:
                        log.error("%s", e)
