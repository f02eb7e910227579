"""The API's response shapes, for the OpenAPI document and for validating what we send."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from sandboxd.core.records import ForkRecord


class Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ErrorOut(Out):
    error: str
    message: str
    problems: list[dict[str, str]] | None = None


class SandboxOut(Out):
    name: str
    uid: str
    routing_key: str
    baggage: str
    phase: str
    ready: bool
    reason: str | None
    message: str | None
    labels: dict[str, str]
    spec: dict[str, Any]
    created_at: str
    updated_at: str
    expires_at: str
    deleted_at: str | None
    ttl_seconds: int
    generation: int
    forks: list[ForkRecord]
    faults: list[dict[str, Any]]
    links: dict[str, str]


class SandboxList(Out):
    items: list[SandboxOut]


class EventOut(Out):
    time: str
    type: str
    reason: str
    message: str


class EventList(Out):
    items: list[EventOut]


class BaselineOut(Out):
    url: str
    health: str | None


class ServiceOut(Out):
    name: str
    protocol: str
    router_port: int | None
    router_url: str | None
    baseline: BaselineOut


class ServiceList(Out):
    baggage_key: str
    items: list[ServiceOut]


class RouteOut(Out):
    sandbox: str
    forks: dict[str, str]
    faults: list[dict[str, Any]]


class RouteTableOut(Out):
    version: str
    baggage_key: str
    services: list[dict[str, Any]]
    routes: dict[str, RouteOut]
    base: str | None = None
    """Only in a delta (`delta=true`): the version these changes apply to."""
    removed: list[str] | None = None
    """Only in a delta: the routing keys no longer routed."""


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing or invalid token"},
    422: {"model": ErrorOut, "description": "Invalid input"},
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The body is not JSON"},
    413: {"model": ErrorOut, "description": "The body is over the size limit"},
}
