"""The narrow interface between the reconciler and a runtime.

Each runtime's package also has `open_runtime(settings, ...)`, an async context manager that
builds the runtime, starts it and closes it: the composition root picks one by name and knows
nothing of its parts. A runtime's failures are the `errors` module's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from sandboxd.core.catalog import Catalog
from sandboxd.core.phases import ForkState
from sandboxd.core.plan import RuntimeKind, SandboxPlan

__all__ = ["ForkState", "ForkStatus", "LogChunk", "Opened", "Runtime"]


@dataclass(frozen=True, slots=True)
class ForkStatus:
    """What the runtime observes of one fork right now."""

    service: str
    state: ForkState
    upstream: str | None
    pid: int | None
    started_at: float | None  # seconds since the epoch
    message: str | None = None
    adopted: bool = False
    self_timed: bool = False  # the runtime fails a fork that makes no progress; no health timeout
    reason: str | None = None  # why an EXITED fork failed, as a CamelCase word
    replacing: ForkStatus | None = None
    """The new copy started to replace this one (its plan changed) while this one serves;
    this one is replaced once the new copy is ready, and kept serving if it never is."""


@dataclass(frozen=True, slots=True)
class LogChunk:
    data: bytes
    next_offset: int


class Runtime(Protocol):
    kind: ClassVar[RuntimeKind]
    poll_interval: ClassVar[float]
    """Seconds between reconciles of a sandbox whose forks are starting."""

    async def start(self) -> None:
        """Find what an earlier run of sandboxd left (to adopt or remove)."""

    async def apply(self, plan: SandboxPlan) -> list[ForkStatus]:
        """Converge the sandbox's forks on `plan`: start what is missing, replace what differs,
        stop what is no longer planned. Returns at once with what it observes; call again."""

    async def stop(self, name: str, *, keep_logs: bool = False) -> bool:
        """Stop everything of sandbox `name`; True once nothing of it runs."""

    async def sandboxes(self) -> set[str]:
        """Names of the sandboxes the runtime holds anything for."""

    async def read_log(
        self, name: str, service: str, *, offset: int | None, tail: int | None
    ) -> LogChunk | None:
        """A fork's output; None when the runtime has no log for it."""

    def no_log(self, name: str, service: str) -> str:
        """Why `read_log` gave None, and where the fork's log is, for people to read."""

    async def close(self) -> None:
        """Stop everything this runtime started (the server is shutting down)."""


@dataclass(frozen=True, slots=True)
class Opened:
    """What `open_runtime` gives: the started runtime, and the catalog with whatever the
    runtime found of it (on Kubernetes, the cluster's labelled Services)."""

    runtime: Runtime
    catalog: Catalog
