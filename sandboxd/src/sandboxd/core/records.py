"""The sandbox's record beyond its spec: each fork's status, and the events of its log.

One schema for every reader: the store keeps a `ForkRecord` as JSON (`sandboxd.store.columns`),
the API shows it as it is, the route table takes its upstream and the reconciler compares it with
what the runtime observes. The JSON is camelCase with every field present (`"pid": null`), as
rows written by earlier versions hold it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer
from pydantic.alias_generators import to_camel

from sandboxd.core.clock import rfc3339
from sandboxd.core.phases import ForkState

EventType = Literal["Normal", "Warning"]


def _to_milliseconds(moment: datetime) -> datetime:
    """UTC, to the millisecond: what the JSON keeps, so a record read back equals the one
    written and an unchanged fork is never written again."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(microsecond=moment.microsecond // 1000 * 1000)


Timestamp = Annotated[
    datetime, AfterValidator(_to_milliseconds), PlainSerializer(rfc3339, return_type=str)
]
"""A moment in UTC; `2026-11-22T08:00:00.123Z` in JSON."""


class Record(BaseModel):
    """A stored part of the sandbox record. Fields this version does not know are ignored, so a
    row written by a newer version still loads after a rollback."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore"
    )


class ForkRecord(Record):
    """A fork's status as the reconciler last saw it."""

    service: str
    phase: ForkState
    ready: bool
    upstream: str | None
    pid: int | None = None
    message: str | None = None
    started_at: Timestamp | None = None

    def stopped(self) -> ForkRecord:
        return self.model_copy(update={"phase": ForkState.STOPPED, "ready": False})


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a sandbox's event log (the store adds the time)."""

    reason: str
    message: str
    type: EventType = "Normal"
    by: str | None = None
    """The token whose call made it (None: sandboxd's own doing)."""
