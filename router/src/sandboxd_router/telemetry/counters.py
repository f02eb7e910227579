"""Counters since the telemetry process started, for a Prometheus endpoint to read
(`sandboxd_requests_total{sandbox,service,code}`, `sandboxd_request_duration_seconds`,
`sandboxd_faults_injected_total{sandbox,service,fault}`, the MCP tool counters).

Plain dicts keyed by label values; sandbox "" is the baseline (requests with no sandbox's
key). A deleted sandbox's series must disappear, so cardinality stays bounded by the live
sandboxes: `forget` it.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sandboxd_router.telemetry.buckets import HISTOGRAM_MS
from sandboxd_router.telemetry.observed import Observed

K = TypeVar("K", bound=tuple[Any, ...])
V = TypeVar("V")


class Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(HISTOGRAM_MS) + 1)
        """Per `HISTOGRAM_MS` bound (not cumulative), then the overflow."""
        self.sum = 0.0
        """Seconds."""


class Counters:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        """(sandbox, service, status code; 0 for none) → requests."""
        self.durations: dict[tuple[str, str], Histogram] = {}
        """(sandbox, service) → every request's duration."""
        self.faults: dict[tuple[str, str, str], int] = {}
        """(sandbox, service, fault id) → requests it was applied to."""
        self.tools: dict[tuple[str, str, str, str], int] = {}
        """(sandbox, service, tool, outcome: "" or the error class) → `tools/call` requests."""

    def add(self, o: Observed, slot: int) -> None:
        """`slot`: the request's histogram slot (`buckets.bin_of`)."""
        key = (o.sandbox, o.service, o.status)
        self.requests[key] = self.requests.get(key, 0) + 1
        pair = (o.sandbox, o.service)
        histogram = self.durations.get(pair)
        if histogram is None:
            histogram = self.durations[pair] = Histogram()
        histogram.counts[slot] += 1
        histogram.sum += o.duration
        for fault in o.faults:
            fkey = (o.sandbox, o.service, fault.id)
            self.faults[fkey] = self.faults.get(fkey, 0) + 1
        if o.tool is not None:
            tkey = (o.sandbox, o.service, o.tool, o.error)
            self.tools[tkey] = self.tools.get(tkey, 0) + 1

    def forget(self, sandbox: str) -> None:
        """Drop a (deleted) sandbox's series."""
        _forget(self.requests, sandbox)
        _forget(self.durations, sandbox)
        _forget(self.faults, sandbox)
        _forget(self.tools, sandbox)


def _forget(table: dict[K, V], sandbox: str) -> None:
    for key in [k for k in table if k[0] == sandbox]:
        del table[key]
