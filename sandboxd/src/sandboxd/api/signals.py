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
"""

from __future__ import annotations

import email.message
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from starlette.requests import ClientDisconnect

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

router = APIRouter(prefix="/v1", tags=["routing"], dependencies=[Depends(require_token)])
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
    errors: ErrorCounts = ErrorCounts()
    injected_errors: ErrorCounts = ErrorCounts()
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


class SignalsPost(Model):
    instance: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    buckets: Annotated[list[Bucket], Field(max_length=MAX_ENTRIES)] = []
    requests: Annotated[list[RequestRecord], Field(max_length=MAX_ENTRIES)] = []

    @model_validator(mode="after")
    def _once_each(self) -> SignalsPost:
        buckets = {(b.routing_key, b.service, b.start) for b in self.buckets}
        if len(buckets) < len(self.buckets):
            raise ValueError("a bucket (routingKey, service, start) is given twice")
        if len({r.seq for r in self.requests}) < len(self.requests):
            raise ValueError("a request's seq is given twice")
        return self


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` put in place of their `$ref`s: the body is
    documented by hand (FastAPI does not parse it), outside the document's components."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


_BODY = {"required": True, "content": {"application/json": {
    "schema": _inline(SignalsPost.model_json_schema(by_alias=True))}}}  # fmt: skip


@router.post(
    "/router-signals",
    response_model=SignalsAccepted,
    responses={**ERRORS, **BODY_ERRORS},
    openapi_extra={"requestBody": _BODY},
)
async def router_signals(state: StateDep, request: Request) -> SignalsAccepted:
    """A router telemetry process's buckets and request records; safe to send again."""
    try:
        body = await request.body()
    except ClientDisconnect as e:
        raise HTTPException(400, "There was an error parsing the body") from e
    content_type = request.headers.get("content-type")
    outcome = await state.offload.run(parse_post, body, is_json=_is_json(content_type))
    if isinstance(outcome, Refused):
        if not outcome.errors:
            raise HTTPException(400, "There was an error parsing the body")
        raise RequestValidationError(outcome.errors)
    stored = await state.store.store_signals(
        instance=outcome.instance, buckets=outcome.buckets, records=outcome.records
    )
    return SignalsAccepted(accepted=stored.accepted, ignored=stored.ignored)


@dataclass(frozen=True, slots=True)
class Parsed:
    instance: str
    buckets: list[BucketIn]
    records: list[RecordIn]


@dataclass(frozen=True, slots=True)
class Refused:
    errors: list[dict[str, Any]]
    """pydantic's errors, located under `body` as FastAPI's are; none: not JSON at all (400)."""


def parse_post(body: bytes, *, is_json: bool) -> Parsed | Refused:
    """A post's body read as FastAPI reads a JSON body (the same answers to bad ones), in the
    offload process (`sandboxd.api.offload`): it is the CPU-heavy part of a post."""
    if not body:
        return Refused([{"type": "missing", "loc": ("body",), "msg": "Field required",
                         "input": None}])  # fmt: skip
    data: Any = body  # not declared JSON: refused below as not an object, like FastAPI does
    if is_json:
        try:
            data = json.loads(body)
        except json.JSONDecodeError as e:
            error = {"type": "json_invalid", "loc": ("body", e.pos), "msg": "JSON decode error",
                     "input": {}, "ctx": {"error": e.msg}}  # fmt: skip
            return Refused([error])
        except (RecursionError, ValueError):  # nested too deeply; not UTF-8
            return Refused([])
    try:
        post = SignalsPost.model_validate(data)
    except ValidationError as e:
        return Refused([{**error, "loc": ("body", *error["loc"])}
                        for error in e.errors(include_url=False)])  # fmt: skip
    return Parsed(post.instance, [_bucket(b) for b in post.buckets],
                  [_record(r) for r in post.requests])  # fmt: skip


def _is_json(content_type: str | None) -> bool:
    """FastAPI's rule (strict content type): application/json or application/*+json."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _bucket(bucket: Bucket) -> BucketIn:
    data = bucket.model_dump_json(by_alias=True, exclude={"routing_key"})
    return BucketIn(bucket.sandbox, bucket.routing_key, bucket.service, bucket.start,
                    bucket.width, bucket.requests, data)  # fmt: skip


def _record(record: RequestRecord) -> RecordIn:
    data = record.model_dump_json(by_alias=True, exclude={"seq", "routing_key"})
    return RecordIn(record.sandbox, record.routing_key, record.seq, record.service, record.start,
                    record.status, record.error, record.trace_id, data)  # fmt: skip
