"""`/v1/sandboxes`: create, read, change and delete sandboxes; their events and fork logs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Response
from pydantic import ValidationError, WithJsonSchema

from sandboxd.api.deps import AppState, CallerDep, StateDep, check_access, require_token
from sandboxd.api.schemas import BODY_ERRORS, ERRORS, ErrorOut, EventList, SandboxList, SandboxOut
from sandboxd.api.system import router_url
from sandboxd.api.views import event_view, page_link, preview_links, sandbox_view
from sandboxd.core.clock import utcnow
from sandboxd.core.duration import format_duration, parse_duration
from sandboxd.core.errors import describe, one_line
from sandboxd.core.fault_spec import FaultSpec
from sandboxd.core.faults import catalog_problems, changes
from sandboxd.core.labels import MAX_LABELS
from sandboxd.core.plan import PlanError, check_forks
from sandboxd.core.records import Event
from sandboxd.core.spec import SandboxPatch, SandboxSpec, agent_labels
from sandboxd.core.tokens import Caller, OutOfScope, scoped_labels
from sandboxd.errors import Conflict, Forbidden, InvalidRequest, NotFound
from sandboxd.store.repository import NewSandbox
from sandboxd.store.tables import SandboxRow

router = APIRouter(
    prefix="/v1/sandboxes", tags=["sandboxes"], dependencies=[Depends(require_token)]
)
NameParam = Annotated[str, Path(max_length=63, description="The sandbox's name")]
LabelFilter = Annotated[str, WithJsonSchema({"type": "string", "pattern": "^[^=]+="})]
IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        pattern=r"^[!-~]([ -~]*[!-~])?$",
        description="1-255 printable ASCII characters; an empty key is refused, not ignored",
    ),
]
MAX_LOG_OFFSET = 2**53  # no log is larger; keeps the number exact in every JSON reader
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No sandbox was ever called that"}
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "Conflicts with the stored sandbox"}
}


async def _view(state: AppState, row: SandboxRow) -> SandboxOut:
    return (await views(state, [row]))[0]


async def views(state: AppState, rows: Sequence[SandboxRow]) -> list[SandboxOut]:
    """The rows as shown, with their fault counts read in one query."""
    keys = [row.routing_key for row in rows if row.spec.faults]
    counts = await state.store.fault_counts(keys) if keys else {}
    url, key = state.settings.effective_public_url, state.catalog.baggage_key
    routers = {s.name: u for s in state.catalog.services if (u := router_url(state.settings, s))}
    return [
        sandbox_view(
            row,
            base_url=url,
            baggage_key=key,
            counts=counts.get(row.routing_key, {}),
            page=page_link(row, base_url=url, key=state.view_key, max_ttl=state.settings.max_ttl),
            previews=preview_links(row, key=state.preview_key, routers=routers),
        )
        for row in rows
    ]


def _ttl_seconds(state: AppState, ttl: str | None) -> int:
    seconds = state.settings.default_ttl if ttl is None else parse_duration(ttl)
    if seconds > state.settings.max_ttl:
        cap = format_duration(state.settings.max_ttl)
        raise InvalidRequest(
            f"ttl: {format_duration(seconds)} is over the cap of {cap}", error="ttl_too_long"
        )
    return seconds


async def _row(state: AppState, name: str, caller: Caller) -> SandboxRow:
    row = await state.store.get(name)
    if row is None:
        raise NotFound(f"sandbox {name!r} not found", sandbox=name)
    check_access(caller, row)
    return row


@router.post(
    "",
    status_code=201,
    response_model=SandboxOut,
    responses={
        200: {"model": SandboxOut, "description": "Exists already with this spec"},
        **ERRORS,
        **BODY_ERRORS,
        **_CONFLICT,
    },
)
async def create_sandbox(
    state: StateDep,
    caller: CallerDep,
    response: Response,
    spec: Annotated[SandboxSpec, Body()],
    idempotency_key: IdempotencyKey = None,
) -> SandboxOut:
    row, created = await state.store.create(_new(state, spec, idempotency_key, caller))
    check_access(caller, row)  # (an identical sandbox found, or one an Idempotency-Key made)
    if created:
        state.routes.update([row])
        state.kicker.kick(row.name)
    response.status_code = 201 if created else 200
    return await _view(state, row)


@router.put(
    "/{name}",
    response_model=SandboxOut,
    responses={
        201: {"model": SandboxOut, "description": "Created"},
        **ERRORS,
        **BODY_ERRORS,
        **_CONFLICT,
    },
)
async def apply_sandbox(
    state: StateDep,
    caller: CallerDep,
    response: Response,
    name: NameParam,
    spec: Annotated[SandboxSpec, Body()],
) -> SandboxOut:
    """Create the sandbox, or update it in place to this spec: its name and routing key stay,
    so links already handed out keep working; changed forks are replaced, and the TTL counts
    from this change. The same spec again changes nothing (200)."""
    if spec.name != name:
        raise InvalidRequest(
            f"name: the body names {spec.name!r}, the path {name!r}", error="name_mismatch"
        )
    row, applied = await state.store.apply(_new(state, spec, None, caller))
    if applied.outcome != "unchanged":
        state.routes.update([row])
        state.kicker.kick(row.name)
    response.status_code = 201 if applied.outcome == "created" else 200
    return await _view(state, row)


def _new(
    state: AppState, spec: SandboxSpec, idempotency_key: str | None, caller: Caller
) -> NewSandbox:
    """A create's or an apply's sandbox, validated against what the model cannot know (the
    TTL cap, the catalog, the caller's scope, whose label it gets) before anything is
    stored."""
    try:
        labels = scoped_labels(caller, spec.labels)
    except OutOfScope as e:
        raise Forbidden(str(e), sandbox=spec.name) from e
    if labels != spec.labels:
        spec = _validated({**spec.canonical(), "labels": labels})
    ttl = _ttl_seconds(state, spec.ttl)
    try:
        check_forks(spec, state.catalog, runtime=state.settings.runtime)
    except PlanError as e:
        raise InvalidRequest(str(e), error="unknown_service") from e
    _check_faults(state, spec.faults)
    spec = spec.model_copy(update={"ttl": format_duration(ttl)})
    canonical = json.dumps(spec.canonical(), sort_keys=True)
    return NewSandbox(
        spec=spec,
        labels={**spec.labels, **agent_labels(spec.agent)},
        ttl_seconds=ttl,
        request_hash=hashlib.sha256(canonical.encode()).hexdigest(),
        idempotency_key=idempotency_key,
        events=_faults_changed([], spec.faults, by=caller.name),
        by=caller.name,
        scope=caller.scope,
    )


def _validated(spec: dict[str, Any]) -> SandboxSpec:
    """A changed spec validated whole: a change can still break a rule, such as the number of
    labels."""
    try:
        return SandboxSpec.model_validate(spec)
    except ValidationError as e:
        raise InvalidRequest(one_line(describe(e.errors())), error="invalid_request") from e


def _label_filter(labels: list[str]) -> dict[str, str]:
    wanted = {}
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"label filter {item!r} is not k=v", error="invalid_label_filter")
        wanted[key] = value
    return wanted


@router.get("", response_model=SandboxList, responses=ERRORS)
async def list_sandboxes(
    state: StateDep,
    caller: CallerDep,
    label: Annotated[
        list[LabelFilter],
        Query(max_length=MAX_LABELS, description="k=v; repeat to require several"),
    ] = [],  # noqa: B006
) -> SandboxList:
    wanted = _label_filter(label)
    if caller.scope is not None:  # a scoped token sees its own sandboxes only
        if wanted.get(caller.scope.key, caller.scope.value) != caller.scope.value:
            return SandboxList(items=[])
        wanted[caller.scope.key] = caller.scope.value
    rows = await state.store.sandboxes()
    matching = [r for r in rows if all(r.labels.get(k) == v for k, v in wanted.items())]
    return SandboxList(items=await views(state, matching))


@router.get("/{name}", response_model=SandboxOut, responses={**ERRORS, **_NOT_FOUND})
async def get_sandbox(state: StateDep, caller: CallerDep, name: NameParam) -> SandboxOut:
    return await _view(state, await _row(state, name, caller))


@router.patch(
    "/{name}",
    response_model=SandboxOut,
    responses={**ERRORS, **BODY_ERRORS, **_NOT_FOUND, **_CONFLICT},
)
async def patch_sandbox(
    state: StateDep, caller: CallerDep, name: NameParam, patch: Annotated[SandboxPatch, Body()]
) -> SandboxOut:
    row = await _row(state, name, caller)
    change = _change(state, row, patch, by=caller.name)
    if change.labels is not None:  # (a scoped token cannot move a sandbox out of its scope)
        try:
            scoped_labels(caller, change.labels)
        except OutOfScope as e:
            raise Forbidden(str(e), sandbox=name) from e
        if caller.scope is not None and not caller.scope.holds(change.labels):
            raise Forbidden(f"the label {caller.scope} of token {caller.name!r} must stay")
    updated = await state.store.update(
        name,
        spec=change.spec,
        labels=change.labels,
        expires_at=change.expires_at,
        events=[Event("Updated", "; ".join(change.what), by=caller.name), *change.events],
        generation=patch.generation,
    )
    if updated is None:
        raise Conflict(f"sandbox {name!r} is {row.phase.lower()}; it cannot change", sandbox=name)
    state.routes.update([updated])
    state.kicker.kick(name)
    return await _view(state, updated)


@dataclass(slots=True)
class _Change:
    spec: SandboxSpec
    labels: dict[str, str] | None  # None: unchanged
    expires_at: datetime | None  # None: unchanged
    what: list[str]
    events: tuple[Event, ...] = ()  # besides `Updated`


def _change(state: AppState, row: SandboxRow, patch: SandboxPatch, *, by: str) -> _Change:
    change = _Change(row.spec, labels=None, expires_at=None, what=[])
    if patch.ttl is not None:
        ttl = _ttl_seconds(state, patch.ttl)
        change.expires_at = utcnow() + timedelta(seconds=ttl)
        change.what.append(f"TTL extended: expires {format_duration(ttl)} from now")
    if patch.labels is not None:
        merged = {**change.spec.labels, **patch.labels}
        labels = {k: v for k, v in merged.items() if v is not None}
        change.spec = _validated({**change.spec.canonical(), "labels": labels})
        change.labels = {**change.spec.labels, **agent_labels(change.spec.agent)}
        change.what.append("labels changed")
    if patch.faults is not None:
        _check_faults(state, patch.faults)
        change.events = _faults_changed(change.spec.faults, patch.faults, by=by)
        change.spec = change.spec.model_copy(update={"faults": list(patch.faults)})
        change.what.append(f"{len(patch.faults)} faults set")
    return change


def _check_faults(state: AppState, faults: Sequence[FaultSpec]) -> None:
    """What the model cannot know: the catalog's services and their protocols. A 422 in the
    shape of a validation error (`problems`, one per field), before anything is stored."""
    protocols = {s.name: s.protocol for s in state.catalog.services}
    problems = catalog_problems(faults, protocols=protocols)
    if problems:
        raise InvalidRequest(one_line(problems), error="invalid_request", problems=problems)


def _faults_changed(
    old: Sequence[FaultSpec], new: Sequence[FaultSpec], *, by: str
) -> tuple[Event, ...]:
    said = changes(old, new)
    return () if said is None else (Event("FaultsChanged", said, by=by),)


@router.delete(
    "/{name}", status_code=202, response_model=SandboxOut, responses={**ERRORS, **_NOT_FOUND}
)
async def delete_sandbox(state: StateDep, caller: CallerDep, name: NameParam) -> SandboxOut:
    event = Event("DeleteRequested", "deletion requested through the API", by=caller.name)
    row = await state.store.request_delete(name, event=event, scope=caller.scope)
    if row is None:
        raise NotFound(f"sandbox {name!r} not found", sandbox=name)
    state.routes.update([row])
    state.kicker.kick(name)
    return await _view(state, row)


@router.get("/{name}/events", response_model=EventList, responses={**ERRORS, **_NOT_FOUND})
async def sandbox_events(state: StateDep, caller: CallerDep, name: NameParam) -> EventList:
    row = await _row(state, name, caller)
    events = await state.store.events(name, uid=row.uid)
    return EventList(items=[event_view(e) for e in events])


@router.get(
    "/{name}/logs/{service}",
    response_class=Response,
    responses={
        **ERRORS,
        **_NOT_FOUND,
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Log bytes",
            "headers": {
                "Sandboxd-Log-Offset": {
                    "description": "The offset to ask for next",
                    "schema": {"type": "integer"},
                }
            },
        },
    },
)
async def fork_logs(
    state: StateDep,
    caller: CallerDep,
    name: NameParam,
    service: Annotated[str, Path(max_length=63)],
    tail: Annotated[int | None, Query(ge=0, le=100_000)] = None,
    offset: Annotated[int | None, Query(ge=0, le=MAX_LOG_OFFSET)] = None,
) -> Response:
    """The fork's output: the last `tail` lines (default 100; 0 gives none, only the offset),
    or the bytes from `offset`. `Sandboxd-Log-Offset` gives the offset to ask for next (for
    `--follow`)."""
    row = await _row(state, name, caller)
    if not any(f.service == service for f in row.spec.forks):
        raise NotFound(f"sandbox {name!r} has no fork of {service!r}", sandbox=name)
    # A runtime reads a tail of 0 as its default; one line gives the offset, which is all
    # that `tail=0` asks for (where a follow starts without printing the past).
    nothing = offset is None and tail == 0
    chunk = await state.logs.read_log(name, service, offset=offset, tail=1 if nothing else tail)
    if chunk is None:
        raise NotFound(state.logs.no_log(name, service), sandbox=name)
    return Response(
        b"" if nothing else chunk.data,
        media_type="text/plain; charset=utf-8",
        headers={"Sandboxd-Log-Offset": str(chunk.next_offset)},
    )
