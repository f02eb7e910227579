"""The aggregates of one (sandbox or baseline, service) over a 10-second window, as the control
plane stores them (`POST /v1/router-signals`, `buckets`).

Latencies are kept as raw samples so the control plane computes percentiles exactly (the
standard `http.server.request.duration` buckets start at 5 ms, too coarse for a proxy): every
sample up to the cap, then a uniform reservoir (Algorithm R) of the cap's size. The histogram
(finer bounds, for Prometheus) counts every request, injected or not.
"""

from __future__ import annotations

from random import Random
from typing import Final

from sandboxd_router.telemetry.observed import (
    ERRORS,
    HTTP_5XX,
    JSONRPC,
    TOOL_ERROR,
    TRANSPORT,
    Observed,
)
from sandboxd_router.telemetry.thousandths import round3, thousandths

WIDTH: Final = 10  # seconds
HISTOGRAM_MS: Final = (
    *(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500),
    *(1000, 2500, 5000, 10000),
)
MAX_TOOLS: Final = 256  # per bucket (the control plane's limit): past it, "(other)"
OTHER: Final = "(other)"
ORGANIC_SAMPLES: Final = 512
INJECTED_SAMPLES: Final = 128
_ERROR_INDEX: Final = {error: i for i, error in enumerate(ERRORS)}

Key = tuple[str, str, str, int]
"""(sandbox, routing key, service, start): "" and "" for requests with no sandbox's key."""


def key_of(observed: Observed) -> Key:
    """The bucket a request counts in: by the time it ENDED (a long request counts late)."""
    start = int(observed.end) // WIDTH * WIDTH
    return (observed.sandbox, observed.routing_key, observed.service, start)


BOUNDS: Final = tuple(float(b) for b in HISTOGRAM_MS)
"""As floats: comparing a float with an int costs many times more (bisect did, 2,700
instructions a request)."""


def bin_of(ms: float) -> int:
    """The histogram slot: the first bound b with ms <= b, else the overflow (the last).
    (From the lowest: a proxy's requests take well under a millisecond.)"""
    slot = 0
    for bound in BOUNDS:
        if ms <= bound:
            return slot
        slot += 1
    return slot


SHARED: Final = 1 << 12  # durations under this many µs: one float object each, shared


class Durations:
    """A request's duration as the buckets keep it: in ms to the µs (`round3`), as a float
    object that every sample of the same value under `SHARED` µs shares, and its histogram
    slot. (Samples are floats in lists: an `array` parses each number it takes, ~350
    instructions, where a list's append is native; shared, they take 8 bytes each as an
    array's do.)"""

    __slots__ = ("_floats", "_slots", "slot")

    def __init__(self) -> None:
        self._floats: list[object] = [None] * SHARED
        self._slots = [bin_of(float(n) / 1000.0) for n in range(SHARED)]
        self.slot = 0
        """The histogram slot of the last duration `sample` took."""

    def sample(self, seconds: float) -> object:
        """`round3(seconds * 1000)` as a float object; its slot in `slot`."""
        n = thousandths(seconds * 1000.0)
        if 0 <= n < SHARED:
            self.slot = self._slots[n]
            sample = self._floats[n]
            if sample is None:
                sample = self._floats[n] = float(n) / 1000.0
            return sample
        ms = round3(seconds * 1000.0)
        self.slot = bin_of(ms)
        return ms


class Bucket:
    __slots__ = (
        "acked",
        "bytes_in",
        "bytes_out",
        "errors",
        "faults",
        "histogram",
        "injected",
        "injected_errors",
        "injected_latency",
        "latency",
        "requests",
        "sent_at",
        "tools",
        "uses",
    )

    def __init__(self) -> None:
        # (3,000 (sandbox, service) pairs hold two windows' buckets each: what most requests
        # never need — errors, faults, tools, injected samples — is made on first use)
        self.requests = 0
        self.acked = 0
        """`requests` when the control plane last acknowledged this bucket: it changed since
        exactly when the two differ (every request counts in `requests`)."""
        self.sent_at = float("-inf")
        """When it was last put in a post (the clock of `SignalsSink`)."""
        self.injected = 0
        self.errors: list[int] | None = None  # in the order of `ERRORS`
        self.injected_errors: list[int] | None = None
        self.faults: dict[str, int] | None = None
        # float objects (`Durations.sample`): most of them shared
        self.latency: list[object] = []
        self.injected_latency: list[object] | None = None
        self.histogram = [0] * (len(HISTOGRAM_MS) + 1)
        self.bytes_in = 0
        self.bytes_out = 0
        self.tools: dict[str, list[int]] | None = None
        """Per tool: calls, JSON-RPC errors, tool errors, injected."""
        self.uses = 0
        """How many times it was `reset` for other names: a post's acknowledgement of an
        earlier use must not mark it."""

    def reset(self) -> None:
        """As new, for another window's names (`tally.Tally` keeps the buckets it drops for the
        next window's: not ~6 objects a bucket born amid a batch's short-lived ones every
        10 s, which left the allocator's pools half empty and its arenas held)."""
        self.uses += 1
        self.requests = self.acked = self.injected = self.bytes_in = self.bytes_out = 0
        self.sent_at = float("-inf")
        self.errors = self.injected_errors = None
        self.faults = None
        self.tools = None
        self.latency.clear()
        self.injected_latency = None
        histogram = self.histogram
        for slot in range(len(histogram)):
            histogram[slot] = 0

    @property
    def changed(self) -> bool:
        return self.requests != self.acked

    def add(self, o: Observed, ms: object, slot: int, rng: Random) -> None:
        """`ms`: the request's duration (`Durations.sample`), `slot` its histogram slot."""
        self.requests += 1
        histogram = self.histogram
        histogram[slot] = histogram[slot] + 1  # (`+=` on an item is a generic add compiled)
        self.bytes_in += o.bytes_in
        self.bytes_out += o.bytes_out
        if o.injected:
            self._injected(o, ms, rng)
        else:
            _sample(self.latency, ms, self.requests - self.injected, ORGANIC_SAMPLES, rng)
            if o.error and o.error in _ERROR_INDEX:  # (most have none: no lookup)
                if self.errors is None:
                    self.errors = [0, 0, 0, 0]
                self.errors[_ERROR_INDEX[o.error]] += 1
        if o.tool is not None:
            self._tool(o)

    def _injected(self, o: Observed, ms: object, rng: Random) -> None:
        self.injected += 1
        faults = self.faults
        if faults is None:
            faults = self.faults = {}
        for fault in o.faults:
            faults[fault.id] = faults.get(fault.id, 0) + 1
        samples = self.injected_latency
        if samples is None:
            samples = self.injected_latency = []
        _sample(samples, ms, self.injected, INJECTED_SAMPLES, rng)
        if o.error in _ERROR_INDEX:
            if self.injected_errors is None:
                self.injected_errors = [0, 0, 0, 0]
            self.injected_errors[_ERROR_INDEX[o.error]] += 1

    def _tool(self, o: Observed) -> None:
        assert o.tool is not None
        tools = self.tools
        if tools is None:
            tools = self.tools = {}
        figures = tools.get(o.tool)
        if figures is None:
            tool = o.tool if len(tools) < MAX_TOOLS - 1 else OTHER  # the control plane's cap
            figures = tools.get(tool)
            if figures is None:
                figures = tools[tool] = [0, 0, 0, 0]
        figures[0] += 1
        figures[1] += o.error == JSONRPC
        figures[2] += o.error == TOOL_ERROR
        figures[3] += o.injected

    def wire(self, key: Key) -> dict[str, object]:
        sandbox, routing_key, service, start = key
        return {
            "sandbox": sandbox,
            "routingKey": routing_key,
            "service": service,
            "start": start,
            "width": WIDTH,
            "requests": self.requests,
            "injected": self.injected,
            "errors": _errors_wire(self.errors),
            "injectedErrors": _errors_wire(self.injected_errors),
            "faults": dict(self.faults or {}),
            "latencyMs": list(self.latency),
            "injectedLatencyMs": list(self.injected_latency or ()),
            "histogram": list(self.histogram),
            "bytesIn": self.bytes_in,
            "bytesOut": self.bytes_out,
            "tools": {tool: _tool_wire(figures) for tool, figures in (self.tools or {}).items()},
        }


def _sample(samples: list[object], value: object, seen: int, cap: int, rng: Random) -> None:
    """Keep `value`, the `seen`-th of its kind, in a uniform sample of at most `cap`."""
    if seen <= cap:
        samples.append(value)
        return
    slot = int(rng.random() * seen)
    if slot < cap:
        samples[slot] = value


def _errors_wire(counts: list[int] | None) -> dict[str, int]:
    """By class, in the order of `ERRORS` (a literal: zip() is a generic call when compiled)."""
    if counts is None:
        counts = [0, 0, 0, 0]
    return {HTTP_5XX: counts[0], JSONRPC: counts[1], TOOL_ERROR: counts[2], TRANSPORT: counts[3]}


def _tool_wire(figures: list[int]) -> dict[str, int]:
    calls, jsonrpc_errors, tool_errors, injected = figures
    return {"calls": calls, "jsonrpcErrors": jsonrpc_errors, "toolErrors": tool_errors,
            "injected": injected}  # fmt: skip


assert tuple(_errors_wire([0, 1, 2, 3])) == ERRORS
