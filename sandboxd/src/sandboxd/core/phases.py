"""Sandbox phases (DESIGN §4): Pending → Provisioning → Ready; Failed; Terminating → Deleted;
and the states of a fork."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    READY = "Ready"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    DELETED = "Deleted"


LIVE = frozenset({Phase.PENDING, Phase.PROVISIONING, Phase.READY, Phase.FAILED})
"""Phases in which the sandbox exists for its users (and keeps its name)."""


class ForkState(StrEnum):
    """A fork as its runtime observes it; a stopped one is kept in a deleted sandbox's record."""

    STARTING = "Starting"
    READY = "Ready"
    EXITED = "Exited"
    STOPPED = "Stopped"
