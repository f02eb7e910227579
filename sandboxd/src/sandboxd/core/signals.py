"""What the routers report about requests (issue 13), as the control plane reads it back: the
buckets of a window merged into one figure per side (sandbox or baseline) and service, and
request records assembled into span trees.

Buckets come from every router instance; merging sums their counts and concatenates their
latency samples, and percentiles are exact over those samples. A router keeps at most 512
samples per bucket (a uniform reservoir past that), so a side with more requests than samples
is `sampled`: its percentiles are then those of the samples, and a busy bucket weighs no more
than a quiet one in them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandboxd.core.compare import Sample

ERROR_TYPES = ("http_5xx", "jsonrpc", "tool_error", "transport")


@dataclass(slots=True)
class ToolFigures:
    calls: int = 0
    jsonrpc_errors: int = 0
    tool_errors: int = 0
    injected: int = 0


@dataclass(slots=True)
class Side:
    """One side (the sandbox, or the baseline) of one service over a window."""

    requests: int = 0
    errors_by_type: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_TYPES, 0))
    faults_injected: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    """Sorted once the side is complete (`merge`)."""
    tools: dict[str, ToolFigures] = field(default_factory=dict)
    _sample: Sample | None = None

    def sample(self) -> Sample:
        """The latencies for `sandboxd.core.compare`, made once (a side may be cached); it
        shares `latencies`, which do not change once the side is complete."""
        if self._sample is None:
            self._sample = Sample(self.latencies, ordered=True)
        return self._sample

    @property
    def errors(self) -> int:
        return sum(self.errors_by_type.values())

    @property
    def sampled(self) -> bool:
        return len(self.latencies) < self.requests


def sides(
    rows: Iterable[tuple[str, Mapping[str, Any]]], *, exclude_injected: bool
) -> dict[str, Side]:
    """(service, bucket) rows merged into one side per service."""
    by_service: dict[str, list[Mapping[str, Any]]] = {}
    for service, bucket in rows:
        by_service.setdefault(service, []).append(bucket)
    return {s: merge(b, exclude_injected=exclude_injected) for s, b in by_service.items()}


def merge(buckets: Iterable[Mapping[str, Any]], *, exclude_injected: bool) -> Side:
    """Buckets as the routers sent them (validated on the way in) summed into one side. With
    `exclude_injected`, requests a fault was applied to count in neither requests, errors nor
    latencies (`faultsInjected` still counts them)."""
    side = Side()
    for bucket in buckets:
        _add(side, bucket, exclude_injected=exclude_injected)
    side.latencies.sort()
    return side


def _add(side: Side, bucket: Mapping[str, Any], *, exclude_injected: bool) -> None:
    injected = int(bucket.get("injected", 0))
    side.requests += int(bucket["requests"]) - (injected if exclude_injected else 0)
    side.faults_injected += injected
    counted = [bucket.get("errors", {})]
    side.latencies += bucket.get("latencyMs", [])
    if not exclude_injected:
        counted.append(bucket.get("injectedErrors", {}))
        side.latencies += bucket.get("injectedLatencyMs", [])
    for errors in counted:
        for kind in ERROR_TYPES:
            side.errors_by_type[kind] += int(errors.get(kind, 0))
    for fault, count in bucket.get("faults", {}).items():
        side.faults[fault] = side.faults.get(fault, 0) + int(count)
    for tool, figures in bucket.get("tools", {}).items():
        mine = side.tools.setdefault(tool, ToolFigures())
        mine.calls += int(figures.get("calls", 0))
        mine.jsonrpc_errors += int(figures.get("jsonrpcErrors", 0))
        mine.tool_errors += int(figures.get("toolErrors", 0))
        mine.injected += int(figures.get("injected", 0))


@dataclass(slots=True)
class Span:
    record: Mapping[str, Any]
    """The request record as the router sent it (minus `seq` and `routingKey`)."""
    children: list[Span] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Trace:
    trace_id: str
    start: float
    """The earliest span's start (epoch seconds)."""
    duration_ms: float
    """From that start to the latest span's end (offsets in ms: epoch seconds lose the
    microseconds a span's duration has)."""
    roots: list[Span]


def traces(records: Sequence[Mapping[str, Any]]) -> list[Trace]:
    """Records grouped by trace id into span trees, newest trace first. A span whose parent is
    not among the records (the caller's own span, or one of a request not kept) is a root; a
    span id seen twice keeps its first record as the parent of its children."""
    by_trace: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        if record.get("traceId"):
            by_trace.setdefault(str(record["traceId"]), []).append(record)
    built = [_trace(trace_id, group) for trace_id, group in by_trace.items()]
    return sorted(built, key=lambda t: (t.start, t.trace_id), reverse=True)


def _trace(trace_id: str, records: list[Mapping[str, Any]]) -> Trace:
    records = sorted(records, key=lambda r: float(r["start"]))
    spans = [Span(r) for r in records]
    by_id: dict[str, Span] = {}
    for span in spans:
        by_id.setdefault(str(span.record.get("spanId")), span)
    roots = []
    for span in spans:
        parent = by_id.get(str(span.record.get("parentSpanId")))
        if parent is None or parent is span or _descends(parent, span, by_id):
            roots.append(span)
        else:
            parent.children.append(span)
    start = float(records[0]["start"])
    duration = max((float(r["start"]) - start) * 1000 + float(r["durationMs"]) for r in records)
    return Trace(trace_id, start, duration, roots)


def _descends(candidate: Span, ancestor: Span, by_id: Mapping[str, Span]) -> bool:
    """Whether `candidate` is (transitively) a child of `ancestor` by parent ids: a cycle of
    ids (a buggy or hostile client's traceparent) must not hide both spans."""
    seen: set[int] = set()
    node: Span | None = candidate
    while node is not None and id(node) not in seen:
        if node is ancestor:
            return True
        seen.add(id(node))
        node = by_id.get(str(node.record.get("parentSpanId")))
    return False
