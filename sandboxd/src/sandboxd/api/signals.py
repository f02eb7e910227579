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

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

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


@router.post("/router-signals", response_model=SignalsAccepted, responses={**ERRORS, **BODY_ERRORS})
async def router_signals(state: StateDep, post: SignalsPost) -> SignalsAccepted:
    """A router telemetry process's buckets and request records; safe to send again."""
    buckets = [_bucket(b) for b in post.buckets]
    records = [_record(r) for r in post.requests]
    stored = await state.store.store_signals(
        instance=post.instance, buckets=buckets, records=records
    )
    return SignalsAccepted(accepted=stored.accepted, ignored=stored.ignored)


def _bucket(bucket: Bucket) -> BucketIn:
    data = bucket.model_dump_json(by_alias=True, exclude={"routing_key"})
    return BucketIn(bucket.sandbox, bucket.routing_key, bucket.service, bucket.start,
                    bucket.width, bucket.requests, data)  # fmt: skip


def _record(record: RequestRecord) -> RecordIn:
    data = record.model_dump_json(by_alias=True, exclude={"seq", "routing_key"})
    return RecordIn(record.sandbox, record.routing_key, record.seq, record.service, record.start,
                    record.status, record.error, record.trace_id, data)  # fmt: skip
