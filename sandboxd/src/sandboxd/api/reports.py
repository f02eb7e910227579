"""`POST /v1/router-reports`: what the routers saw, sent to the control plane.

Each router process picks a random `instance` id when it starts and reports CUMULATIVE
counters since then (about every second when they changed, at least every 30 s even when they
did not, which renews its lease, and once on a graceful shutdown).
Cumulative values make the channel safe to repeat: the store keeps the greatest value per
(instance, routing key, fault), so a retried, duplicated or reordered report counts nothing
twice and never lowers a count; a router restart is a new instance whose old rows stay; the
rows live in the database, so a control-plane restart loses nothing. What a router had counted
but not yet reported when it died is the only loss. `seq` (the report's number within its
instance) is for diagnosis only; correctness never depends on it.

An instance silent for longer than `Settings.router_lease` is retired: its counts are folded
(`sandboxd.store.retire`, sums unchanged). If it reports again it gets 409 `instance_retired`
with the values folded for it (`folded`), takes a new id and reports its counters minus those.
`unread` and `unrewritten` may be left out (a router from before them): 0.

Issue 13's per-sandbox request statistics (metric buckets, request records) travel in their
own channel, `POST /v1/router-signals` (`sandboxd.api.signals`).

Limits: `MAX_ENTRIES` entries per report (a router sends more in several reports) and
`sandboxd.store.counts.MAX_INSTANCES` router instances kept (429 beyond, nothing stored).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import Field, model_validator
from starlette.responses import JSONResponse

from sandboxd.api.deps import StateDep, require_token
from sandboxd.api.errors import error_response
from sandboxd.api.schemas import BODY_ERRORS, ERRORS, ErrorOut, Out
from sandboxd.core.model import Model
from sandboxd.store.counts import MAX_INSTANCES, Counts, Folded, Reported

MAX_ENTRIES = 1000
"""Entries per report: 1,000 of about 130 bytes stay well under the API's body limit."""
MAX_COUNT = 2**53  # exact in every JSON reader

router = APIRouter(prefix="/v1", tags=["routing"], dependencies=[Depends(require_token)])
Count = Annotated[int, Field(strict=True, ge=0, le=MAX_COUNT)]
Key = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class FaultCountIn(Model):
    sandbox: Annotated[str, Field(min_length=1, max_length=63)]
    routing_key: Key
    fault: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[!-~]+$")]
    matched: Count
    injected: Count
    unread: Count = 0
    unrewritten: Count = 0


class RouterReport(Model):
    instance: Key
    seq: Count
    faults: Annotated[list[FaultCountIn], Field(max_length=MAX_ENTRIES)] = []

    @model_validator(mode="after")
    def _once_each(self) -> RouterReport:
        seen = set()
        for entry in self.faults:
            key = (entry.routing_key, entry.fault)
            if key in seen:
                raise ValueError(f"fault {entry.fault!r} of {entry.routing_key!r} given twice")
            seen.add(key)
        return self


class FoldedOut(Out):
    routing_key: str
    fault: str
    matched: int
    injected: int
    unread: int
    unrewritten: int


class RetiredOut(ErrorOut):
    folded: list[FoldedOut]
    """The counts folded for the instance, per (routing key, fault): the new instance reports
    its counters minus these."""


class ReportOut(Out):
    accepted: int
    """Entries stored (a count raised, or already as high)."""
    ignored: int
    """Entries for no live sandbox of that name and key, or a fault its spec no longer has."""


@router.post(
    "/router-reports",
    response_model=ReportOut,
    responses={
        **ERRORS,
        **BODY_ERRORS,
        409: {"model": RetiredOut, "description": "The instance was retired"},
        429: {"model": ErrorOut, "description": "Busy"},
    },
)
async def router_report(state: StateDep, report: RouterReport) -> ReportOut | JSONResponse:
    """A router's cumulative counts since it started; safe to send again."""
    entries = [Reported(e.sandbox, e.routing_key, e.fault, _counts(e)) for e in report.faults]
    lease = timedelta(seconds=state.settings.router_lease)
    merged = await state.store.merge_counts(instance=report.instance, entries=entries, lease=lease)
    if merged.retired is not None:
        return error_response(
            409,
            "instance_retired",
            f"router instance {report.instance} was silent too long and its counts were "
            "folded; report under a new instance, minus the values folded",
            folded=[_folded(f) for f in merged.retired],
        )
    if merged.refused:
        return error_response(
            429,
            "too_many_instances",
            f"counts of {MAX_INSTANCES} router instances are kept already; retry later",
            headers={"Retry-After": "5"},
        )
    return ReportOut(accepted=merged.accepted, ignored=merged.ignored)


def _counts(entry: FaultCountIn) -> Counts:
    return Counts(entry.matched, entry.injected, entry.unread, entry.unrewritten)


def _folded(folded: Folded) -> dict[str, object]:
    counts = folded.counts
    return {"routingKey": folded.routing_key, "fault": folded.fault,
            "matched": counts.matched, "injected": counts.injected,
            "unread": counts.unread, "unrewritten": counts.unrewritten}  # fmt: skip
