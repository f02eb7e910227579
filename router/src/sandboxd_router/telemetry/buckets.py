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

from librt.strings import BytesWriter
from orjson import dumps

from sandboxd_router.telemetry.observed import (
    ERRORS,
    HTTP_5XX,
    JSONRPC,
    TOOL_ERROR,
    TRANSPORT,
    Observed,
)
from sandboxd_router.telemetry.thousandths import kept_json, round3, thousandths

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
        "_head",
        "_head_key",
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
        self._head = b""
        """`json`'s text up to `"requests":`, for the key `_head_key` (a bucket is sent again
        while it changes: its names are escaped once)."""
        self._head_key: Key | None = None

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
        self._head_key = None
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

    def json(self, key: Key) -> bytes:
        """`orjson.dumps(self.wire(key))`, byte for byte, written directly: no dicts nor
        lists made, and the samples' texts (most of a bucket's bytes) kept per value."""
        if self._head_key is not key:
            sandbox, routing_key, service, start = key
            self._head = b'{"sandbox":%b,"routingKey":%b,"service":%b,"start":%b,"width":%b,' % (
                dumps(sandbox), dumps(routing_key), dumps(service), dumps(start), dumps(WIDTH)
            )  # fmt: skip
            self._head_key = key
        out = BytesWriter()
        out.write(self._head)
        out.write(b'"requests":')
        out.write(str(self.requests).encode())
        out.write(b',"injected":')
        out.write(str(self.injected).encode())
        out.write(b',"errors":')
        out.write(_errors_json(self.errors))
        out.write(b',"injectedErrors":')
        out.write(_errors_json(self.injected_errors))
        out.write(b',"faults":')
        out.write(dumps(self.faults) if self.faults else b"{}")
        out.write(b',"latencyMs":')
        _samples_json(out, self.latency)
        out.write(b',"injectedLatencyMs":')
        _samples_json(out, self.injected_latency or [])
        out.write(b',"histogram":')
        out.write(dumps(self.histogram))
        out.write(b',"bytesIn":')
        out.write(str(self.bytes_in).encode())
        out.write(b',"bytesOut":')
        out.write(str(self.bytes_out).encode())
        out.write(b',"tools":')
        tools = self.tools
        if tools:
            out.write(dumps({tool: _tool_wire(figures) for tool, figures in tools.items()}))
        else:
            out.write(b"{}")
        out.write(b"}")
        return out.getvalue()


_TEXTS: Final[list[bytes | None]] = [None] * SHARED
"""A sample's JSON text by its thousandths, under `SHARED` (made when first written)."""


def _samples_json(out: BytesWriter, samples: list[object]) -> None:
    """A list of samples (floats, `Durations.sample`) as orjson writes it: a value of a
    thousandth under `SHARED` (most) from its kept text, the others by orjson itself."""
    out.append(_OPEN)
    first = True
    for sample in samples:
        if not first:
            out.append(_COMMA)
        first = False
        text: bytes | None = None
        if isinstance(sample, float):
            n = thousandths(sample)
            if 0 <= n < SHARED and float(n) / 1000.0 == sample:
                text = _TEXTS[n]
                if text is None:
                    text = _TEXTS[n] = kept_json(sample)
        out.write(text if text is not None else dumps(sample))
    out.append(_CLOSE)


_OPEN: Final = 0x5B  # "["
_COMMA: Final = 0x2C
_CLOSE: Final = 0x5D


def _errors_json(counts: list[int] | None) -> bytes:
    return _ZERO_ERRORS if counts is None else dumps(_errors_wire(counts))


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


_ZERO_ERRORS: Final = kept_json(_errors_wire(None))


def _tool_wire(figures: list[int]) -> dict[str, int]:
    calls, jsonrpc_errors, tool_errors, injected = figures
    return {"calls": calls, "jsonrpcErrors": jsonrpc_errors, "toolErrors": tool_errors,
            "injected": injected}  # fmt: skip


assert tuple(_errors_wire([0, 1, 2, 3])) == ERRORS
