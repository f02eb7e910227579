"""One fault as a spec states it (`faults:` on create and PATCH) and the list of them.

The rules the model applies beyond types (the parameters each kind takes, globs, the resolved
`method`, ids) live in `sandboxd.core.faults`; the catalog's rules are checked by the API.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, Strict, model_validator

from sandboxd.core.faults import (
    FAULT_ID,
    HTTP_METHOD,
    FaultKind,
    check_glob,
    check_kind,
    check_method,
    default_method,
    with_ids,
)
from sandboxd.core.model import MAX_INT, MAX_STRING, DnsLabel, Model, ShortText

MAX_FAULTS = 64


def _fault_id(value: str) -> str:
    if not FAULT_ID.fullmatch(value):
        raise ValueError(
            f"{value[:80]!r} is not a fault id (1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit)"
        )
    return value


def _http_method(value: str) -> str:
    if not HTTP_METHOD.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not an HTTP method in upper case, such as GET")
    return value


def _path_glob(value: str) -> str:
    check_glob(value)
    if not value.startswith(("/", "*")):
        raise ValueError(f"{value[:80]!r}: a path glob starts with '/' (or '*')")
    return value


Glob = Annotated[
    str,
    AfterValidator(check_glob),
    Field(
        min_length=1,
        max_length=256,
        description="whole-string, as fnmatch: * ? [...] [!...]",
        json_schema_extra={"pattern": r"^[!-~]+$"},
    ),
]
Count = Annotated[int, Strict(), Field(ge=1, le=MAX_INT)]


class FaultSpec(Model):
    """A fault the router injects into this sandbox's traffic only (`sandboxd.core.faults`
    holds the rules per kind, the globs and the ids).

    Numbers are strict: `true` is not a probability and `"3"` is not a count."""

    id: Annotated[str, AfterValidator(_fault_id), Field(max_length=63)] | None = None
    service: DnsLabel
    kind: FaultKind
    tool: Glob | None = None
    method: Glob | None = None
    path: Annotated[str, AfterValidator(_path_glob), Field(max_length=256)] | None = None
    http_method: Annotated[str, AfterValidator(_http_method)] | None = None
    latency_ms: Annotated[int, Strict(), Field(ge=0, le=600_000)] | None = None
    status: Annotated[int, Strict(), Field(ge=400, le=599)] | None = None
    code: Annotated[int, Strict(), Field(ge=-MAX_INT - 1, le=MAX_INT)] | None = None
    message: ShortText | None = None
    text: Annotated[str, Field(min_length=1, max_length=MAX_STRING)] | None = None
    fields: Annotated[list[ShortText], Field(min_length=1, max_length=64)] | None = None
    retry_after: Annotated[int, Strict(), Field(ge=0, le=86_400)] | None = None
    chunk_delay_ms: Annotated[int, Strict(), Field(ge=0, le=60_000)] | None = None
    probability: Annotated[float, Strict(), Field(ge=0, le=1)] = 1.0
    seed: Annotated[int, Strict(), Field(ge=0, le=MAX_INT)] | None = None
    nth: Count | None = None
    after: Annotated[int, Strict(), Field(ge=0, le=MAX_INT)] | None = None
    times: Count | None = None

    @model_validator(mode="before")
    @classmethod
    def _resolve_method(cls, data: Any) -> Any:
        return default_method(data)

    @model_validator(mode="after")
    def _fits_its_kind(self) -> FaultSpec:
        check_kind(self)
        check_method(self)
        return self


Faults = Annotated[list[FaultSpec], Field(max_length=MAX_FAULTS), AfterValidator(with_ids)]
"""A sandbox's faults in list order (the order decides which one applies), each with an id."""
