"""`POST /v1/router-signals`: what the routers' telemetry processes saw, per request and in
aggregates (issue 13; the wire format is fixed in the signals contract).

A router's telemetry process posts, under its own random `instance` id, the metric buckets it
holds (per sandbox or baseline, service and 10 s of time) and the records of the requests that
carried a live sandbox's key. Safe to repeat: a bucket replaces the stored copy only when it
holds at least as many requests (a re-sent open bucket grows; an older copy never overwrites a
newer one); a request record is keyed (instance, seq) and stored once. Entries whose sandbox is
not live (by name AND routing key) are ignored and counted in `ignored`; baseline buckets
(`sandbox` and `routingKey` "") are always accepted. What is kept, and for how long:
`sandboxd.store.signals`.

Every field is bounded (names ≤ 63 characters, lists as the contract says, numbers ≥ 0 and
≤ 2^53, finite) and the counts must add up (errors within requests, samples within requests):
a body that breaks a rule is refused whole with 422, nothing stored. A post may be up to
`MAX_POST_BYTES`, above the API's usual body limit: 1,000 buckets of samples need it.

A post is the largest and most frequent request the API takes (a router posts several a
second), so it is read in small steps that leave the event loop to the other calls: the body
parsed by orjson (the standard parser takes 3-4 times as long over samples), then validated
one entry at a time against the same models, `STEP` entries between two turns of the loop,
instead of one call of tens of milliseconds over the whole body. The errors, and the OpenAPI
document (`SignalsPost`), are the same as one validation of the whole body would give.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any, Literal, Protocol, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from sandboxd.api.deps import StateDep, require_token
from sandboxd.api.schemas import BODY_ERRORS, ERRORS, SignalsAccepted
from sandboxd.core.model import Model
from sandboxd.store.signals import MAX_WIDTH, BucketIn, RecordIn

MAX_ENTRIES = 1000
"""Buckets, and request records, per post (a router sends more in several posts)."""
MAX_POST_BYTES = 8 * 1024 * 1024
MAX_NUMBER = 2**53  # exact in every JSON reader
HISTOGRAM_SIZE = 17  # 16 bounds (HISTOGRAM_MS of the contract) and the overflow
MAX_SAMPLES, MAX_INJECTED_SAMPLES = 512, 128
STEP = 50
"""Entries validated between two turns of the event loop (about a millisecond's work)."""


class _OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:  # integers past 64 bits, lone surrogates: as before
                self._json = json.loads(body)
        return self._json


class _OrjsonRoute(APIRoute):
    """A route whose JSON body is parsed by orjson (FastAPI's own parsing and its errors
    otherwise unchanged: FastAPI reads the body through `Request.json`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def orjson_handler(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return orjson_handler


router = APIRouter(
    prefix="/v1", tags=["routing"], dependencies=[Depends(require_token)], route_class=_OrjsonRoute
)
Count = Annotated[int, Field(strict=True, ge=0, le=MAX_NUMBER)]
Number = Annotated[float, Field(strict=True, ge=0, le=MAX_NUMBER, allow_inf_nan=False)]
Key = Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")]
Token = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[!-~]+$")]
Text = Annotated[str, Field(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")]
Name = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]
Hex32 = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
Hex16 = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
Value = (
    StrictBool
    | Annotated[int, Field(strict=True, ge=-MAX_NUMBER, le=MAX_NUMBER)]
    | Annotated[float, Field(strict=True, ge=-MAX_NUMBER, le=MAX_NUMBER, allow_inf_nan=False)]
    | Annotated[str, Field(max_length=4096)]
)
Attributes = Annotated[dict[Annotated[str, Field(min_length=1, max_length=128)], Value],
                       Field(max_length=64)]  # fmt: skip
ErrorType = Literal["http_5xx", "jsonrpc", "tool_error", "transport"]


class ErrorCounts(BaseModel):
    """Counts per outcome class; the keys are the classes' names (snake_case on the wire)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    http_5xx: Count = 0
    jsonrpc: Count = 0
    tool_error: Count = 0
    transport: Count = 0

    def total(self) -> int:
        return self.http_5xx + self.jsonrpc + self.tool_error + self.transport


NO_ERRORS: dict[str, Any] = {"default": dict.fromkeys(ErrorCounts.model_fields, 0)}
"""The default shown for a factory (pydantic deep-copies a default model for every bucket)."""


class ToolCounts(Model):
    calls: Count
    jsonrpc_errors: Count = 0
    tool_errors: Count = 0
    injected: Count = 0


class Bucket(Model):
    sandbox: Annotated[str, Field(max_length=63)]
    routing_key: Key
    service: Token
    start: Count
    width: Annotated[int, Field(strict=True, ge=1, le=MAX_WIDTH)] = 10
    requests: Count
    injected: Count = 0
    errors: ErrorCounts = Field(default_factory=ErrorCounts, json_schema_extra=NO_ERRORS)
    injected_errors: ErrorCounts = Field(default_factory=ErrorCounts, json_schema_extra=NO_ERRORS)
    faults: Annotated[dict[Token, Count], Field(max_length=256)] = {}
    latency_ms: Annotated[list[Number], Field(max_length=MAX_SAMPLES)] = []
    injected_latency_ms: Annotated[list[Number], Field(max_length=MAX_INJECTED_SAMPLES)] = []
    histogram: Annotated[list[Count], Field(max_length=HISTOGRAM_SIZE)] = []
    bytes_in: Count = 0
    bytes_out: Count = 0
    tools: Annotated[dict[Name, ToolCounts], Field(max_length=256)] = {}

    @field_validator("latency_ms", "injected_latency_ms")
    @classmethod
    def _sorted(cls, samples: list[float]) -> list[float]:
        """Stored sorted: merging a window's sorted runs is cheap (timsort)."""
        return sorted(samples)

    @model_validator(mode="after")
    def _adds_up(self) -> Bucket:
        organic = self.requests - self.injected
        problems = [
            (self.start % self.width != 0, "start is not a multiple of width"),
            ((self.sandbox == "") != (self.routing_key == ""), "sandbox, routingKey: both or none"),
            (organic < 0, "more injected than requests"),
            (self.errors.total() > max(organic, 0), "more errors than organic requests"),
            (self.injected_errors.total() > self.injected, "more injectedErrors than injected"),
            (len(self.latency_ms) > max(organic, 0), "more latencyMs than organic requests"),
            (len(self.injected_latency_ms) > self.injected, "more injectedLatencyMs than injected"),
            (len(self.histogram) not in (0, HISTOGRAM_SIZE), f"histogram: {HISTOGRAM_SIZE} counts"),
        ]  # fmt: skip
        for broken, problem in problems:
            if broken:
                raise ValueError(problem)
        return self


class FaultRef(Model):
    kind: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z_]+$")]
    id: Token


class SpanEvent(Model):
    name: Name
    time: Number
    attributes: Annotated[dict[Annotated[str, Field(min_length=1, max_length=128)], Value],
                          Field(max_length=16)] = {}  # fmt: skip


class RequestRecord(Model):
    seq: Count
    sandbox: Annotated[str, Field(min_length=1, max_length=63)]
    routing_key: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    service: Token
    route: Literal["sandbox", "baseline"]
    start: Number
    duration_ms: Number
    method: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[!-~]+$")]
    status: Annotated[int, Field(strict=True, ge=0, le=999)]
    bytes_in: Count = 0
    bytes_out: Count = 0
    error: ErrorType | None = None
    injected: StrictBool = False
    faults: Annotated[list[FaultRef], Field(max_length=16)] = []
    trace_id: Hex32 | None = None
    span_id: Hex16 | None = None
    parent_span_id: Hex16 | None = None
    rpc_method: Text | None = None
    tool: Text | None = None
    rpc_id: Text | None = None
    name: Name
    attributes: Attributes = {}
    events: Annotated[list[SpanEvent], Field(max_length=16)] = []


class SignalsPost(Model):  # as documented: `router_signals` validates it in steps
    instance: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    buckets: Annotated[list[Bucket], Field(max_length=MAX_ENTRIES)] = []
    requests: Annotated[list[RequestRecord], Field(max_length=MAX_ENTRIES)] = []

    @model_validator(mode="after")
    def _once_each(self) -> SignalsPost:
        _once_each(self.buckets, self.requests)
        return self


class _Unchecked:
    class SignalsPost(Model):
        """`SignalsPost` with its entries left unchecked (`_validated` checks them one by one),
        of the same name: pydantic's messages name it."""

        instance: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
        buckets: Annotated[list[Any], Field(max_length=MAX_ENTRIES)] = []
        requests: Annotated[list[Any], Field(max_length=MAX_ENTRIES)] = []


_Envelope = _Unchecked.SignalsPost


class _BucketKey(Protocol):
    @property
    def routing_key(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def start(self) -> int: ...


class _RecordKey(Protocol):
    @property
    def seq(self) -> int: ...


def _once_each(buckets: Sequence[_BucketKey], records: Sequence[_RecordKey]) -> None:
    if len({(b.routing_key, b.service, b.start) for b in buckets}) < len(buckets):
        raise ValueError("a bucket (routingKey, service, start) is given twice")
    if len({r.seq for r in records}) < len(records):
        raise ValueError("a request's seq is given twice")


def _as_is(body: Any) -> Any:
    return body


PostBody = Annotated[_Envelope, BeforeValidator(_as_is, json_schema_input_type=SignalsPost)]
"""Checked as `_Envelope`, documented as `SignalsPost`."""


@router.post("/router-signals", response_model=SignalsAccepted, responses={**ERRORS, **BODY_ERRORS})
async def router_signals(state: StateDep, post: PostBody) -> SignalsAccepted:
    """A router telemetry process's buckets and request records; safe to send again."""
    buckets, records = await _validated(post)
    stored = await state.store.store_signals(
        instance=post.instance, buckets=buckets, records=records
    )
    return SignalsAccepted(accepted=stored.accepted, ignored=stored.ignored)


async def _validated(post: _Envelope) -> tuple[list[BucketIn], list[RecordIn]]:
    """The entries of `post` validated as `SignalsPost` would, a few at a time; every entry's
    errors, or the duplicates, as a 422."""
    errors: list[Any] = []
    buckets = await _each(post.buckets, "buckets", _bucket, errors)
    records = await _each(post.requests, "requests", _record, errors)
    if not errors:
        try:
            _once_each(buckets, records)
        except ValueError as e:
            errors.append({"type": "value_error", "loc": ("body",), "msg": f"Value error, {e}",
                           "input": None, "ctx": {"error": str(e)}})  # fmt: skip
    if errors:
        raise RequestValidationError(errors)
    return buckets, records


T = TypeVar("T")


async def _each(
    entries: list[Any], field: str, read: Callable[[Any], T], errors: list[Any]
) -> list[T]:
    """`read` of each entry; the errors (located in the body) added to `errors`."""
    valid = []
    for i, entry in enumerate(entries):
        if i and i % STEP == 0:
            await asyncio.sleep(0)  # the loop's other calls go between two steps
        try:
            valid.append(read(entry))
        except ValidationError as e:
            errors += [{**error, "loc": ("body", field, i, *error["loc"])} for error in e.errors()]
    return valid


def _bucket(entry: Any) -> BucketIn:
    bucket = Bucket.model_validate(entry)
    data = bucket.model_dump_json(by_alias=True, exclude={"routing_key"})
    return BucketIn(bucket.sandbox, bucket.routing_key, bucket.service, bucket.start,
                    bucket.width, bucket.requests, data)  # fmt: skip


def _record(entry: Any) -> RecordIn:
    record = RequestRecord.model_validate(entry)
    data = record.model_dump_json(by_alias=True, exclude={"seq", "routing_key"})
    return RecordIn(record.sandbox, record.routing_key, record.seq, record.service, record.start,
                    record.status, record.error, record.trace_id, data)  # fmt: skip
