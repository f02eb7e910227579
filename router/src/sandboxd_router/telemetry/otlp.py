"""The router's spans, exported over OTLP/HTTP (protobuf) from a thread of the telemetry
process, never from the request path.

Off unless the standard variables ask for it: `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set (or `OTEL_TRACES_EXPORTER=otlp`), and neither
`OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`. The rest of the configuration
(headers, timeout, compression, certificates) comes from the same variables (`otlppost`), and
the resource from `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` through the SDK's
`Resource.create` (service name by default `sandboxd-router`): the only use of the SDK, once,
and only when on, so a telemetry process that does not export never imports it.

A span is what `spans.span_of` says of a request, with the span id the control plane's request
records carry (`spans.span_id`): a backend and `/traces` hold the same spans. Each is encoded
when seen (`otlpwire`: ~2.5 µs a span with its post, where the SDK took ~43) and queued as bytes;
the queue is bounded: when the endpoint is slow or down, what does not fit is dropped and
counted (`dropped`), as is every span of a batch the endpoint refused or never answered
(`failed`); routing never waits for any of it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
from collections import deque
from collections.abc import Mapping

from sandboxd_router.telemetry import traceparent
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
    that 0.05 µs a span), at most `max_queue` waiting (~300 bytes each)."""

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
        self._span = encoder.span
        self._poster = poster
        self._batch = batch
        self._delay = delay
        self._queue: deque[bytes] = deque()
        self._max_queue = max_queue
        self._ready = threading.Event()
        """Set when a whole batch waits (or at close): the thread posts without waiting."""
        self._closing = False
        self.exported = 0
        self.dropped = 0
        """Spans that found the queue full (the endpoint slower than the traffic, or down)."""
        self.failed = 0
        """Spans of batches the endpoint refused or never answered."""
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._thread.start()

    def add(self, observed: Observed) -> None:
        """Encode and queue one span; never blocks (a full queue drops it, counted, before
        anything is spent on it)."""
        queue = self._queue
        if len(queue) >= self._max_queue:
            self._count_drops(1)
            return
        try:
            span = self._span(observed)
        except (TypeError, ValueError):  # a bug of ours: this span goes, not the read's others
            log.exception("a span cannot be encoded: dropped")
            self._count_drops(1)
            return
        queue.append(span)
        if len(queue) >= self._batch and not self._ready.is_set():
            self._ready.set()

    def add_many(self, batch: list[Observed]) -> None:
        """`add` of each, but a queue already full drops the whole batch at once (a dead
        endpoint costs each request a count, not a call)."""
        if len(self._queue) >= self._max_queue:
            self._count_drops(len(batch))
            return
        for observed in batch:
            self.add(observed)

    def close(self, timeout: float = 1.0) -> None:
        """Post what is queued, for at most `timeout` seconds, then stop."""
        self._closing = True
        self._ready.set()
        self._thread.join(timeout)
        self._poster.close()
        left = len(self._queue)
        if left:
            self.dropped += left
            log.warning("%d spans not exported at shutdown", left)

    def _count_drops(self, n: int) -> None:
        before, self.dropped = self.dropped, self.dropped + n
        if before.bit_length() < self.dropped.bit_length():  # past 1, 2, 4, 8, ...: said once
            log.warning("%d spans dropped: the OTLP endpoint is slower than the traffic",
                        self.dropped)  # fmt: skip

    def _run(self) -> None:
        queue = self._queue
        while True:
            timed_out = not self._ready.wait(self._delay)
            self._ready.clear()
            closing = self._closing
            # whole batches as they come, and what is left once the delay has passed (once: a
            # slow endpoint must not turn a steady stream into posts of a few spans) or at close
            due = len(queue) if timed_out or closing else len(queue) // self._batch * self._batch
            while due > 0:
                batch = [queue.popleft() for _ in range(min(self._batch, due))]
                due -= len(batch)
                self._post(batch)
            if closing:
                return

    def _post(self, batch: list[bytes]) -> None:
        try:
            ok = self._poster.post(self._encoder.request(batch))
        except Exception:  # a bug here must not end the thread: count and go on
            log.exception("the OTLP export failed")
            ok = False
        if ok:
            self.exported += len(batch)
            return
        if not self.failed:
            log.warning("cannot export spans over OTLP; they are dropped and counted")
        self.failed += len(batch)


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
    return SpanExport(encoder(env), poster)


def encoder(env: Mapping[str, str]) -> SpanEncoder:
    """The encoder of this process's spans: the resource as the SDK makes it (imported here
    only: a process that does not export never loads it)."""
    from opentelemetry.sdk.resources import Resource

    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": "sandboxd-router"}
    resource = Resource.create(attributes)
    return SpanEncoder(resource.attributes, schema_url=resource.schema_url)
