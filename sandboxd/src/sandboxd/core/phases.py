"""Sandbox phases (DESIGN §4): Pending → Provisioning → Ready; Failed; Terminating → Deleted."""

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
