"""The router's spans, exported over OTLP/HTTP (protobuf) from a thread of the telemetry
process, never from the request path.

Off unless the standard variables ask for it: `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set (or `OTEL_TRACES_EXPORTER=otlp`), and neither
`OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`. The rest of the configuration
(headers, timeout, compression, certificates) comes from the same variables (`otlppost`), the
batching from the batch span processor's (`OTEL_BSP_*`, `Batching`), and the resource from
`OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` through the SDK's `Resource.create` (service
name by default `sandboxd-router`): the only use of the SDK, once, and only when on, so a
telemetry process that does not export never imports it.

A span is what `spans.span_of` says of a request, with the span id the control plane's request
records carry (`spans.span_id`): a backend and `/traces` hold the same spans. Each is encoded
when seen (`otlpwire`, a read of the ring at once, compiled: ~2,400 instructions a span with
its post by `benchmarks/otlp_instructions.py`, where the SDK took ~43 µs) and queued as
bytes; the queue is bounded: when the endpoint is slow, what does not fit is dropped and
counted (`dropped`), as is all of it while the endpoint is down (before any is encoded), and
every span of a batch the endpoint refused or never answered (`failed`); routing never waits
for any of it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from sandboxd_router.telemetry import spans, traceparent
from sandboxd_router.telemetry.observed import Observed
from sandboxd_router.telemetry.otlppost import Poster, Settings
from sandboxd_router.telemetry.otlpwire import SpanEncoder

log = logging.getLogger("sandboxd_router.telemetry")

TRUE = ("true", "1", "yes")


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether the standard OTel variables ask for an OTLP span exporter."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in TRUE:
        return False
    exporters = {e.strip().lower() for e in environ.get("OTEL_TRACES_EXPORTER", "").split(",")}
    if "none" in exporters:
        return False
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    return bool(endpoint) or "otlp" in exporters


class SpanExport:
    """A bounded queue of encoded spans and the thread that posts them in batches: up to
    `batch` a post (a post costs ~0.1 ms of CPU besides its bytes: 2,048 spans, ~600 kB, make
    that 0.05 µs a span), at most `max_queue` waiting (~300 bytes each).

    The spans of a read of the ring are encoded together (`SpanEncoder.spans`, compiled: one
    bytes object for up to `batch` spans) and queued as one piece. While the endpoint is down
    (its last attempt had no answer, or only "later": known at once, not after the retries),
    nothing new is encoded: each read's spans are dropped and counted at once; the thread keeps
    posting what is queued, or an empty request, until the endpoint answers again."""

    def __init__(
        self,
        encoder: SpanEncoder,
        poster: Poster,
        *,
        max_queue: int = 8192,
        batch: int = 2048,
        delay: float = 1.0,
    ) -> None:
        self._encoder = encoder
        self._spans = encoder.spans
        self._poster = poster
        self._batch = batch
        self._delay = delay
        self._queue: deque[tuple[bytes, int]] = deque()
        """Pieces of encoded spans and how many spans each holds (at most `batch`)."""
        self._queued = 0
        """The spans in the queue."""
        self._lock = threading.Lock()
        """Over the queue and `_queued` (taken once a read and once a post)."""
        self._max_queue = max_queue
        self._ready = threading.Event()
        """Set when a whole batch waits (or at close): the thread posts without waiting."""
        self._closing = False
        self.exported = 0
        self.dropped = 0
        """Spans that found the queue full (the endpoint slower than the traffic) or the
        endpoint down."""
        self.failed = 0
        """Spans of batches the endpoint refused or never answered."""
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._thread.start()

    @property
    def down(self) -> bool:
        """The endpoint's last answer was none (or only "later"): spans are dropped before
        they are encoded until it answers."""
        return self._poster.down

    def add(self, observed: Observed) -> None:
        """Encode and queue one span (`add_many`)."""
        self.add_many([observed])

    def add_many(self, batch: list[Observed]) -> None:
        """Encode and queue a span of each; never blocks. What does not fit in the queue, or
        all of it while the endpoint is down, is dropped and counted before anything is spent
        on it."""
        room = 0 if self.down else self._max_queue - self._queued
        if room < len(batch):
            self._count_drops(len(batch) - max(room, 0))
            batch = batch[: max(room, 0)]
        step = self._batch
        for at in range(0, len(batch), step):
            self._queue_spans(batch[at : at + step])

    def _queue_spans(self, batch: list[Observed]) -> None:
        try:
            piece = (self._spans(batch), len(batch))
        except (TypeError, ValueError):  # a bug of ours: that span goes, not the read's others
            piece = self._one_by_one(batch)
        with self._lock:
            self._queue.append(piece)
            self._queued += piece[1]
            whole = self._queued >= self._batch
        if whole and not self._ready.is_set():
            self._ready.set()

    def _one_by_one(self, batch: list[Observed]) -> tuple[bytes, int]:
        encoded = []
        for observed in batch:
            try:
                encoded.append(self._encoder.span(observed))
            except (TypeError, ValueError):
                log.exception("a span cannot be encoded: dropped")
                self._count_drops(1)
        return b"".join(encoded), len(encoded)

    def close(self, timeout: float = 1.0) -> None:
        """Post what is queued, for at most `timeout` seconds, then stop."""
        self._closing = True
        self._ready.set()
        self._thread.join(timeout)
        self._poster.close()
        with self._lock:
            left, self._queued = self._queued, 0
            self._queue.clear()
        if left:
            self.dropped += left
            log.warning("%d spans not exported at shutdown", left)

    def _count_drops(self, n: int) -> None:
        before, self.dropped = self.dropped, self.dropped + n
        if before.bit_length() < self.dropped.bit_length():  # past 1, 2, 4, 8, ...: said once
            log.warning("%d spans dropped: the OTLP endpoint is down or slower than the traffic",
                        self.dropped)  # fmt: skip

    def _run(self) -> None:
        while True:
            timed_out = not self._ready.wait(self._delay)
            self._ready.clear()
            closing = self._closing
            # whole batches as they come, and what is left once the delay has passed (once: a
            # slow endpoint must not turn a steady stream into posts of a few spans) or at close
            while batch := self._next(whole=not (timed_out or closing)):
                self._post(*batch)
            if self.down and not closing and not self._queued:
                self._post([], 0)  # (is it back?)
            if closing:
                return

    def _next(self, *, whole: bool) -> tuple[list[bytes], int] | None:
        """Pieces of at most `batch` spans together, taken from the queue; None when it is
        empty or, `whole`, holds less than a batch."""
        with self._lock:
            if not self._queue or (whole and self._queued < self._batch):
                return None
            pieces, spans = [], 0
            while self._queue and spans + self._queue[0][1] <= self._batch:
                piece, n = self._queue.popleft()
                pieces.append(piece)
                spans += n
            if not pieces:  # (a piece is never more than a batch; this is a safeguard)
                piece, spans = self._queue.popleft()
                pieces.append(piece)
            self._queued -= spans
            return pieces, spans

    def _post(self, pieces: list[bytes], spans: int) -> None:
        try:
            status = self._poster.post(self._encoder.request_pieces(pieces))
        except Exception:  # a bug here must not end the thread: count and go on
            log.exception("the OTLP export failed")
            status = 500
        if 200 <= status < 300:
            self.exported += spans
            return
        if not self.failed and spans:
            log.warning("cannot export spans over OTLP; they are dropped and counted")
        self.failed += spans


class SpanSink:
    """A `Sink`: every request that carried a sandbox's key becomes a span, and a `baseline`
    fraction of the others (chosen by trace id, so that every router keeps the same traces;
    at random without one). Requests no service was routed for make none."""

    def __init__(self, export: SpanExport, *, baseline: float = 0.0) -> None:
        self.export = export
        self.baseline = baseline
        self._threshold = int(baseline * (1 << 56))

    def add(self, observed: Observed) -> None:
        if observed.service == "-" or not (observed.sandbox or self._sampled(observed)):
            return
        self.export.add(observed)

    def add_all(self, batch: list[Observed]) -> None:
        """`add` of a read of the ring (`observed.BatchSink`)."""
        if self._threshold <= 0:  # (no baseline sampled: the compiled filter)
            self.export.add_many(spans.of_sandboxes(batch))
            return
        self.export.add_many(
            [o for o in batch if o.service != "-" and (o.sandbox or self._sampled(o))]
        )

    def _sampled(self, observed: Observed) -> bool:
        if self._threshold <= 0:
            return False
        context = traceparent.parse(observed.traceparent)
        if context is None:
            return random.random() < self.baseline  # noqa: S311 (sampling, not secrecy)
        return int(context[0][-14:], 16) < self._threshold

    async def tick(self) -> None:
        pass

    async def close(self) -> None:
        await asyncio.to_thread(self.export.close)


@dataclass(frozen=True)
class Batching:
    """The batch span processor's standard variables, as `SpanExport` applies them:
    `OTEL_BSP_SCHEDULE_DELAY` (ms: the longest a span waits for a batch to fill),
    `OTEL_BSP_MAX_QUEUE_SIZE` (spans waiting, beyond which they are dropped) and
    `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (spans a post). The defaults are not the SDK's (5,000 ms,
    2,048, 512): a post costs the same CPU whatever it holds, and this process shares a core
    with the router, so batches are larger and a second's traffic may wait. A value that is not
    a positive integer is warned of and the default used; a batch larger than the queue is the
    queue's size (as the SDK requires)."""

    delay: float = 1.0
    max_queue: int = 8192
    batch: int = 2048

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Batching:
        delay = _positive(env, "OTEL_BSP_SCHEDULE_DELAY", 1000)
        max_queue = _positive(env, "OTEL_BSP_MAX_QUEUE_SIZE", cls.max_queue)
        batch = _positive(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", cls.batch)
        if batch > max_queue:
            log.warning("OTEL_BSP_MAX_EXPORT_BATCH_SIZE %d is above the queue's %d: %d",
                        batch, max_queue, max_queue)  # fmt: skip
            batch = max_queue
        return cls(delay=delay / 1000, max_queue=max_queue, batch=batch)


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number <= 0:
        log.warning("%s=%r is not a positive integer: %d", name, text, default)
        return default
    return number


def from_env(environ: Mapping[str, str] | None = None) -> SpanExport | None:
    """The exporter the standard variables ask for, or None (off)."""
    env = os.environ if environ is None else environ
    if not enabled(env):
        return None
    settings = Settings.from_env(env)
    try:  # (a CA or client certificate is read here)
        poster = Poster(settings)
    except (ValueError, OSError) as e:  # (ssl.SSLError is an OSError)
        log.error("no spans are exported: OTLP endpoint %s: %s", settings.url, e)
        return None
    batching = Batching.from_env(env)
    return SpanExport(
        encoder(env),
        poster,
        max_queue=batching.max_queue,
        batch=batching.batch,
        delay=batching.delay,
    )


def encoder(env: Mapping[str, str]) -> SpanEncoder:
    """The encoder of this process's spans: the resource as the SDK makes it (imported here
    only: a process that does not export never loads it)."""
    from opentelemetry.sdk.resources import Resource

    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": "sandboxd-router"}
    resource = Resource.create(attributes)
    return SpanEncoder(resource.attributes, schema_url=resource.schema_url)
