"""OTLP/HTTP posts of encoded span batches, from the exporter's thread: one kept-alive
connection (`http.client`, stdlib: the telemetry process stays small), the standard
`OTEL_EXPORTER_OTLP_*` settings, and the OTLP retry rules.

Settings, each `OTEL_EXPORTER_OTLP_TRACES_<X>` first, then `OTEL_EXPORTER_OTLP_<X>`, as the
OpenTelemetry SDK's HTTP exporter reads them: `ENDPOINT` (the traces one as is, the general one
with `/v1/traces` appended; default `http://localhost:4318/v1/traces`), `HEADERS`
(`k=v,k2=v2`, URL-encoded values), `TIMEOUT` (seconds, default 10), `COMPRESSION` (`gzip`,
`deflate`, `none`), `CERTIFICATE` (CA bundle for https), `CLIENT_CERTIFICATE` and `CLIENT_KEY`
(mutual TLS).

A batch is retried while the timeout allows when the answer says to (429, 502, 503, 504, with
`Retry-After` honoured) or the connection failed; any other answer fails it at once. A failed
batch is the caller's to count: nothing here blocks anyone but the exporter's thread.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import random
import ssl
import threading
import time
import urllib.parse
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from sandboxd_router.telemetry.connection import Connection

log = logging.getLogger("sandboxd_router.telemetry")

DEFAULT_ENDPOINT = "http://localhost:4318"
TRACES_PATH = "/v1/traces"
RETRYABLE = frozenset((429, 502, 503, 504))
ATTEMPTS = 6


@dataclass(frozen=True)
class Settings:
    url: str
    """Where the batches are posted (the traces endpoint, path included)."""
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    """Seconds a batch may take, its retries included."""
    compression: str = "none"
    """"none", "gzip" or "deflate"."""
    certificate: str | None = None
    """A CA bundle to trust (https)."""
    client_certificate: str | None = None
    client_key: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def get(name: str) -> str:
            return env.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or env.get(
                f"OTEL_EXPORTER_OTLP_{name}", ""
            )

        url = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
            (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT).removesuffix("/")
            + TRACES_PATH
        )
        return cls(
            url=url,
            headers=_headers(get("HEADERS")),
            timeout=_timeout(get("TIMEOUT")),
            compression=_compression(get("COMPRESSION")),
            certificate=get("CERTIFICATE") or None,
            client_certificate=get("CLIENT_CERTIFICATE") or None,
            client_key=get("CLIENT_KEY") or None,
        )


def _headers(text: str) -> dict[str, str]:
    """`k=v` pairs, comma-separated, values URL-encoded (a malformed pair is skipped)."""
    headers = {}
    for pair in text.split(","):
        name, equals, value = pair.partition("=")
        name = name.strip().lower()
        if not equals or not name:
            if pair.strip():
                log.warning("OTLP header %r is not name=value: skipped", pair.strip())
            continue
        headers[name] = urllib.parse.unquote(value.strip())
    return headers


def _timeout(text: str) -> float:
    try:
        return float(text) if text else 10.0
    except ValueError:
        log.warning("OTLP timeout %r is not a number: 10 s", text)
        return 10.0


def _compression(text: str) -> str:
    name = text.strip().lower() or "none"
    if name not in ("none", "gzip", "deflate"):
        log.warning("OTLP compression %r is not supported: none", text)
        return "none"
    return name


class Poster:
    """Posts one batch at a time over a kept-alive connection (not thread-safe: one thread)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        url = urllib.parse.urlsplit(settings.url)
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._headers = {"Content-Type": "application/x-protobuf", "User-Agent": "sandboxd-router"}
        if settings.compression != "none":
            self._headers["Content-Encoding"] = settings.compression
        self._headers.update(settings.headers)
        tls = self._context() if url.scheme == "https" else None
        self._connection = Connection(settings.url, context=tls)
        self._stop = threading.Event()
        self.down = False
        """The last attempt got no answer, or only "later" (429, 502, 503, 504): known at the
        first attempt, not after the retries (the exporter encodes nothing meanwhile)."""

    def post(self, body: bytes | list[bytes]) -> int:
        """The endpoint's last answer to the batch, `body` or the pieces it is made of in
        order (retried as the module says): 2xx it was accepted; 0 no answer came."""
        data = self._compress(body)
        deadline = time.monotonic() + self.settings.timeout
        status = 0
        for attempt in range(ATTEMPTS):
            status, retry_after = self._send(data, deadline)
            self.down = status == 0 or status in RETRYABLE
            if 200 <= status < 300:
                return status
            if status and status not in RETRYABLE:
                log.warning("the OTLP endpoint answered %d to a batch of spans", status)
                return status
            pause = _backoff(attempt) if retry_after is None else retry_after
            if time.monotonic() + pause >= deadline or self._stop.wait(pause):
                return status
        return status

    def close(self) -> None:
        """Stop retrying (from another thread) and let the connection go."""
        self._stop.set()
        self._connection.close()

    def _send(self, data: bytes | list[bytes], deadline: float) -> tuple[int, float | None]:
        """The answer's status (0: no answer) and its Retry-After in seconds, if any."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return 0, None
        try:
            answer = self._connection.post(self._path, data, self._headers, remaining)
        except (OSError, http.client.HTTPException) as e:
            log.debug("OTLP post failed: %s", e)
            return 0, None
        return answer.status, _seconds(answer.headers.get("Retry-After"))

    def _context(self) -> ssl.SSLContext:
        s = self.settings
        context = ssl.create_default_context(cafile=s.certificate)
        if s.client_certificate:
            context.load_cert_chain(s.client_certificate, s.client_key)
        return context

    def _compress(self, body: bytes | list[bytes]) -> bytes | list[bytes]:
        # level 1: a span batch compresses well at once; more costs the telemetry process CPU
        if self.settings.compression == "none":
            return body
        if not isinstance(body, bytes):
            body = b"".join(body)
        if self.settings.compression == "gzip":
            return gzip.compress(body, compresslevel=1)
        if self.settings.compression == "deflate":
            return zlib.compress(body, 1)
        return body


def _backoff(attempt: int) -> float:
    return float(2**attempt) * random.uniform(0.8, 1.2)  # noqa: S311 (jitter, not secrecy)


def _seconds(retry_after: str | None) -> float | None:
    """A Retry-After in seconds (the delay form; a date is ignored: the backoff applies)."""
    try:
        return max(0.0, float(retry_after)) if retry_after else None
    except ValueError:
        return None
