"""The tables. Times are naive UTC (SQLite keeps no zone); `sandboxd.core.clock` converts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Column, DateTime, Double, Index, Text
from sqlmodel import Field, SQLModel

from sandboxd.core.records import ForkRecord
from sandboxd.core.spec import SandboxSpec
from sandboxd.store.columns import TypedJSON


class SandboxRow(SQLModel, table=True):
    """One sandbox by name. A deleted sandbox stays as a tombstone (phase Deleted) until its
    name is used again, which gives the row a new `uid` and routing key."""

    __tablename__ = "sandboxes"

    name: str = Field(primary_key=True, max_length=40)
    uid: str = Field(max_length=32)
    routing_key: str = Field(max_length=64, unique=True)
    spec: SandboxSpec = Field(
        sa_column=Column(TypedJSON(SandboxSpec, exclude_none=True), nullable=False)
    )
    labels: dict[str, str] = Field(sa_column=Column(JSON, nullable=False))
    phase: str = Field(max_length=16, index=True)
    reason: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, max_length=2048)
    forks: list[ForkRecord] = Field(sa_column=Column(TypedJSON(list[ForkRecord]), nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime, nullable=False, index=True))
    deleted_at: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))
    generation: int = 1


class EventRow(SQLModel, table=True):
    __tablename__ = "events"

    id: int | None = Field(default=None, primary_key=True)
    sandbox: str = Field(max_length=40, index=True)
    uid: str = Field(max_length=32)
    time: datetime = Field(sa_column=Column(DateTime, nullable=False))
    type: str = Field(max_length=16)  # Normal | Warning
    reason: str = Field(max_length=64)
    message: str = Field(max_length=2048)
    by: str | None = Field(default=None, max_length=64)
    """The token whose call made the event (None: sandboxd's own doing)."""


class TokenRow(SQLModel, table=True):
    """API tokens, stored as SHA-256 hashes only."""

    __tablename__ = "tokens"

    name: str = Field(primary_key=True, max_length=64)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    scope: str | None = Field(default=None, max_length=330)
    """`key=value`: the label of the only sandboxes it may touch (None: the admin's)."""
    expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))


class AuditRow(SQLModel, table=True):
    """One API call: when, by which token, what, and its answer's status."""

    __tablename__ = "audit"

    id: int | None = Field(default=None, primary_key=True)
    time: datetime = Field(sa_column=Column(DateTime, nullable=False, index=True))
    token: str = Field(max_length=64)
    method: str = Field(max_length=8)
    path: str = Field(max_length=512)
    status: int


class IdempotencyRow(SQLModel, table=True):
    """`Idempotency-Key` of a create: a replay with the same body returns the same sandbox, the
    one with `uid` (NULL: unknown, for keys older than the column), while it lives."""

    __tablename__ = "idempotency_keys"

    key: str = Field(primary_key=True, max_length=255)
    request_hash: str = Field(max_length=64)
    sandbox: str = Field(max_length=40)
    uid: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(sa_column=Column(DateTime, nullable=False, index=True))


class FaultCountRow(SQLModel, table=True):
    """One router instance's cumulative counts of one fault in one sandbox, as last reported.

    Keyed by the routing key, not the name: a name used again gets a new key, so counts never
    pass from a deleted sandbox to its successor. A report only ever raises a count (the
    greatest of stored and reported), so a retried or reordered report changes nothing; a
    sandbox's count is the sum over instances."""

    __tablename__ = "fault_counts"

    instance: str = Field(primary_key=True, max_length=64)
    routing_key: str = Field(primary_key=True, max_length=64, index=True)
    fault: str = Field(primary_key=True, max_length=63)
    matched: int = Field(sa_column=Column(BigInteger, nullable=False))
    injected: int = Field(sa_column=Column(BigInteger, nullable=False))
    unread: int = Field(sa_column=Column(BigInteger, nullable=False, server_default="0"))
    unrewritten: int = Field(sa_column=Column(BigInteger, nullable=False, server_default="0"))
    updated_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


class RouterInstanceRow(SQLModel, table=True):
    """A router instance with counts kept, and when it last reported: its lease. Its row is
    also the lock that orders its reports against its retirement (`sandboxd.store.retire`)."""

    __tablename__ = "router_instances"

    instance: str = Field(primary_key=True, max_length=64)
    seen_at: datetime = Field(sa_column=Column(DateTime, nullable=False, index=True))


class RetiredCountRow(SQLModel, table=True):
    """What was folded for a retired instance, per sandbox (routing key) and fault: given back
    to it (409 `instance_retired`) if it reports again, so it can count on from there."""

    __tablename__ = "retired_counts"

    instance: str = Field(primary_key=True, max_length=64)
    routing_key: str = Field(primary_key=True, max_length=64, index=True)
    fault: str = Field(primary_key=True, max_length=63)
    matched: int = Field(sa_column=Column(BigInteger, nullable=False))
    injected: int = Field(sa_column=Column(BigInteger, nullable=False))
    unread: int = Field(sa_column=Column(BigInteger, nullable=False))
    unrewritten: int = Field(sa_column=Column(BigInteger, nullable=False))
    retired_at: datetime = Field(sa_column=Column(DateTime, nullable=False, index=True))


class SignalBucketRow(SQLModel, table=True):
    """One router instance's aggregate of one service's requests over one time bucket, for one
        sandbox (its routing key) or the baseline (""). `data` is the bucket as the router sent it
    (JSON text, written as pydantic encodes it: a fifth of the cost of a JSON column's encoder);
        `requests` is kept apart for the rule that a copy with fewer requests (an older one) never
        replaces a stored one. Keyed so that a sandbox's (and the baseline's) rows in a window are
        one range of the primary key."""

    __tablename__ = "signal_buckets"
    __table_args__ = (Index("ix_signal_buckets_start", "start"),)

    routing_key: str = Field(primary_key=True, max_length=64)
    start: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    service: str = Field(primary_key=True, max_length=63)
    instance: str = Field(primary_key=True, max_length=64)
    width: int
    requests: int = Field(sa_column=Column(BigInteger, nullable=False))
    data: str = Field(sa_column=Column(Text, nullable=False))


class RequestRecordRow(SQLModel, table=True):
    """One request of a sandbox as a router recorded it (`data`: the record as sent, minus
    `seq` and `routingKey`); inserted once per (instance, seq). The columns beside `data` are
    what the API filters and orders by."""

    __tablename__ = "request_records"
    __table_args__ = (
        Index("ix_request_records_key_start", "routing_key", "start"),
        Index("ix_request_records_key_trace", "routing_key", "trace_id"),
    )

    instance: str = Field(primary_key=True, max_length=64)
    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    routing_key: str = Field(max_length=64)
    service: str = Field(max_length=63)
    start: float = Field(sa_column=Column(Double, nullable=False))
    status: int
    error: str | None = Field(default=None, max_length=16)
    trace_id: str | None = Field(default=None, max_length=32)
    data: str = Field(sa_column=Column(Text, nullable=False))
