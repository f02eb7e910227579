"""Real trace backends on loopback, for the tests that check what is traced, built once and
cached by scripts/otel-assets (which honours SANDBOXD_OTEL_ASSETS).

- `running_collector`: an OpenTelemetry Collector (`otelcol-sandboxd`) that receives OTLP over
  HTTP and gRPC on free loopback ports and writes every batch it gets, as one OTLP/JSON line, to
  a file; `Collector.spans()` reads that file back as `Span`s.
- `running_jaeger`: Jaeger v2 (memory storage) receiving OTLP likewise; `Jaeger.find()` asks
  its query API for traces by service and tags, as an operator would.

Their own metrics endpoints are off and every listener is on a free loopback port, so several
of them (and other tests) never fight over a port.

    with running_collector(tmp_path) as collector:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.otlp_http_url}
        ...
        spans = collector.wait_for(lambda spans: any(s.name == "GET /x" for s in spans))
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from tests.support import poll
from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass(frozen=True)
class Event:
    name: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Span:
    """One span as the collector received it (ids in lowercase hex, `parent` None for a root)."""

    trace_id: str
    span_id: str
    parent: str | None
    name: str
    kind: str
    """server, client, internal, producer or consumer."""
    attributes: dict[str, Any]
    events: list[Event]
    service: str
    """The resource's `service.name`."""
    status: str
    """unset, ok or error."""
    resource: dict[str, Any] = field(repr=False)


class Spans(list[Span]):
    """Spans that print as a count and the last few (service, name), for a failed wait."""

    def __repr__(self) -> str:
        last = [(s.service, s.name, s.trace_id) for s in self[-8:]]
        return f"{len(self)} spans, the last: {last}"


def assets() -> Path:
    """The backends' directory, from scripts/otel-assets (which honours SANDBOXD_OTEL_ASSETS)."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "otel-assets")], capture_output=True, text=True, timeout=1800
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/otel-assets failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass
class Collector:
    directory: Path
    http_port: int
    grpc_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def otlp_http_url(self) -> str:
        """What OTEL_EXPORTER_OTLP_ENDPOINT takes for OTLP over HTTP (protobuf or JSON)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def output(self) -> Path:
        return self.directory / "spans.jsonl"

    @property
    def log(self) -> Path:
        return self.directory / "collector.log"

    def spans(self) -> list[Span]:
        """Every span received so far (a line the collector is still writing is skipped)."""
        if not self.output.exists():
            return []
        found: list[Span] = []
        for line in self.output.read_text().splitlines():
            try:
                batch = json.loads(line)
            except ValueError:
                continue
            found.extend(parse_batch(batch))
        return found

    def wait_for(
        self, accept: Callable[[list[Span]], object], *, timeout: float = 30, what: str = ""
    ) -> list[Span]:
        """`spans()` once `accept` holds for them."""
        return poll.until(
            lambda: Spans(self.spans()),
            accept,
            timeout=timeout,
            what=what or "spans at the collector",
            context=self._context,
        )

    def trace(self, trace_id: str) -> list[Span]:
        return [s for s in self.spans() if s.trace_id == trace_id]

    def _context(self) -> str:
        log = self.log.read_text()[-3000:] if self.log.exists() else ""
        names = sorted({(s.service, s.name) for s in self.spans()})
        return f"every (service, span name) received: {names}\ncollector log:\n{log}"

    def config(self) -> str:
        return json.dumps(
            {
                "receivers": {
                    "otlp": {
                        "protocols": {
                            "grpc": {"endpoint": self.otlp_grpc_endpoint},
                            "http": {"endpoint": f"127.0.0.1:{self.http_port}"},
                        }
                    }
                },
                "processors": {"batch": {"timeout": "50ms"}},
                "exporters": {
                    "file": {"path": str(self.output), "flush_interval": "50ms"},
                    "debug": {"verbosity": "basic"},
                },
                "service": {
                    "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
                    "pipelines": {
                        "traces": {
                            "receivers": ["otlp"],
                            "processors": ["batch"],
                            "exporters": ["file"],
                        }
                    },
                },
            }
        )

    def start(self, executable: Path) -> None:
        config = self.directory / "config.json"
        config.write_text(self.config())  # JSON is YAML: the collector reads it as its config
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(executable), "--config", f"file:{config}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            )
        poll.until(
            self._ready, timeout=60, what="the collector to accept OTLP", context=self._context
        )
        poll.port_open(self.grpc_port, timeout=10)

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"the collector exited ({self.process.returncode})")
        try:
            response = httpx.post(
                f"{self.otlp_http_url}/v1/traces", json={"resourceSpans": []}, timeout=2
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def running_collector(directory: Path) -> Iterator[Collector]:
    """A collector writing to `directory`/spans.jsonl; stopped on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    collector = Collector(directory=directory, http_port=free_port(), grpc_port=free_port())
    try:
        collector.start(assets() / "otelcol-sandboxd")
        yield collector
    finally:
        collector.stop()


def parse_batch(batch: dict[str, Any]) -> Iterator[Span]:
    """The spans of one OTLP/JSON `ExportTraceServiceRequest`."""
    for resource_spans in batch.get("resourceSpans", []):
        resource = attributes(resource_spans.get("resource", {}).get("attributes", []))
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                yield Span(
                    trace_id=span["traceId"].lower(),
                    span_id=span["spanId"].lower(),
                    parent=span.get("parentSpanId", "").lower() or None,
                    name=span["name"],
                    kind=KINDS.get(int(span.get("kind", 0)), "unspecified"),
                    attributes=attributes(span.get("attributes", [])),
                    events=[
                        Event(e["name"], attributes(e.get("attributes", [])))
                        for e in span.get("events", [])
                    ],
                    service=str(resource.get("service.name", "")),
                    status={1: "ok", 2: "error"}.get(
                        int(span.get("status", {}).get("code", 0)), "unset"
                    ),
                    resource=resource,
                )


def attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    """OTLP/JSON key-value pairs as a dict (int64 values arrive as strings in OTLP/JSON)."""
    return {item["key"]: value(item.get("value", {})) for item in items}


def value(any_value: dict[str, Any]) -> Any:
    if "stringValue" in any_value:
        return any_value["stringValue"]
    if "intValue" in any_value:
        return int(any_value["intValue"])
    if "doubleValue" in any_value:
        return float(any_value["doubleValue"])
    if "boolValue" in any_value:
        return bool(any_value["boolValue"])
    if "arrayValue" in any_value:
        return [value(v) for v in any_value["arrayValue"].get("values", [])]
    if "kvlistValue" in any_value:
        return attributes(any_value["kvlistValue"].get("values", []))
    return None


@dataclass
class Jaeger:
    """Jaeger v2 on loopback: OTLP in (HTTP, gRPC), traces kept in memory, its query API."""

    directory: Path
    http_port: int
    grpc_port: int
    query_port: int
    query_grpc_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def otlp_http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    @property
    def log(self) -> Path:
        return self.directory / "jaeger.log"

    def find(self, service: str, tags: dict[str, str]) -> dict[str, list[Span]]:
        """The traces (trace id → spans) of `service` that have a span with all of `tags`, as
        Jaeger's query API answers them."""
        response = httpx.get(
            f"{self.query_url}/api/traces",
            params={"service": service, "tags": json.dumps(tags), "lookback": "1h"},
            timeout=10,
        )
        if response.status_code == 404:  # the service is not known yet
            return {}
        response.raise_for_status()
        return {t["traceID"]: jaeger_spans(t) for t in response.json()["data"] or []}

    def config(self) -> str:
        loopback = "127.0.0.1"
        return json.dumps(
            {
                "service": {
                    "extensions": ["jaeger_storage", "jaeger_query"],
                    "pipelines": {
                        "traces": {
                            "receivers": ["otlp"],
                            "processors": ["batch"],
                            "exporters": ["jaeger_storage_exporter"],
                        }
                    },
                    "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
                },
                "extensions": {
                    "jaeger_storage": {"backends": {"memory": {"memory": {"max_traces": 10000}}}},
                    "jaeger_query": {
                        "storage": {"traces": "memory"},
                        "http": {"endpoint": f"{loopback}:{self.query_port}"},
                        "grpc": {"endpoint": f"{loopback}:{self.query_grpc_port}"},
                    },
                },
                "receivers": {
                    "otlp": {
                        "protocols": {
                            "grpc": {"endpoint": f"{loopback}:{self.grpc_port}"},
                            "http": {"endpoint": f"{loopback}:{self.http_port}"},
                        }
                    }
                },
                "processors": {"batch": {"timeout": "50ms"}},
                "exporters": {"jaeger_storage_exporter": {"trace_storage": "memory"}},
            }
        )

    def start(self, executable: Path) -> None:
        config = self.directory / "jaeger.json"
        config.write_text(self.config())
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(executable), "--config", f"file:{config}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            )
        poll.until(self._ready, timeout=60, what="Jaeger to answer", context=self._log_tail)

    def _log_tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"Jaeger exited ({self.process.returncode})")
        try:
            query = httpx.get(f"{self.query_url}/api/services", timeout=2)
            otlp = httpx.post(f"{self.otlp_http_url}/v1/traces", json={"resourceSpans": []})
        except httpx.HTTPError:
            return False
        return query.status_code == otlp.status_code == 200

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def running_jaeger(directory: Path) -> Iterator[Jaeger]:
    directory.mkdir(parents=True, exist_ok=True)
    ports = [free_port() for _ in range(4)]
    jaeger = Jaeger(directory, *ports)
    try:
        jaeger.start(assets() / "jaeger")
        yield jaeger
    finally:
        jaeger.stop()


def jaeger_spans(found: dict[str, Any]) -> list[Span]:
    """The spans of one trace of Jaeger's query API (`/api/traces`), as `Span`s."""
    services = {k: p["serviceName"] for k, p in found.get("processes", {}).items()}
    spans = []
    for span in found["spans"]:
        tags = {t["key"]: t["value"] for t in span.get("tags", [])}
        parents = [r["spanID"] for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
        spans.append(
            Span(
                trace_id=span["traceID"],
                span_id=span["spanID"],
                parent=parents[0] if parents else None,
                name=span["operationName"],
                kind=str(tags.pop("span.kind", "internal")),
                attributes=tags,
                events=[
                    Event(
                        next((f["value"] for f in e["fields"] if f["key"] == "event"), ""),
                        {f["key"]: f["value"] for f in e["fields"] if f["key"] != "event"},
                    )
                    for e in span.get("logs", [])
                ],
                service=services.get(span.get("processID", ""), ""),
                status="error" if tags.get("error") is True else "unset",
                resource={},
            )
        )
    return spans


@contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """`app` on a real uvicorn server on loopback, in a thread of this process; its base URL
    (a recorder of what a client sends, say)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        poll.port_open(port, timeout=10)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
