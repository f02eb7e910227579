"""The control plane's Kubernetes client traced against the real apiserver: with
OTEL_EXPORTER_OTLP_ENDPOINT set, every call the runtime makes while it provisions a sandbox
arrives at a real OpenTelemetry Collector as a CLIENT span of service sandboxd, with the stable
HTTP attributes (the client speaks HTTP/2 over TLS to the apiserver), the child of the
`reconcile` span that made it (one trace per reconcile, not one per call)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import poll
from tests.support.kube import KubeControlPlane
from tests.support.kube_objects import apply, baseline_workload
from tests.support.otel import Collector, Span, running_collector
from tests.support.server import running_sandboxd

NAMESPACE = "traced-shop"
CATALOG = f"""
services:
  - name: echo
    baseline: {{url: "http://echo.{NAMESPACE}.svc.cluster.local:80"}}
    kubernetes: {{namespace: {NAMESPACE}, deployment: echo, service: echo, port: 80}}
"""


@pytest.fixture(scope="module")
def baseline(kube: KubeControlPlane) -> Iterator[None]:
    with kube.client() as client:
        client.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}})
        for obj in baseline_workload(
            "echo", NAMESPACE, image="acme/echo:1.0", mode="v1", requests={"cpu": "100m"}
        ):
            apply(client, obj)
        yield
        client.delete(f"/api/v1/namespaces/{NAMESPACE}")


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    with running_collector(tmp_path_factory.mktemp("otelcol")) as running:
        yield running


def test_the_runtimes_kubernetes_calls_are_client_spans(
    tmp_path: Path, kube: KubeControlPlane, baseline: None, collector: Collector
) -> None:
    name = f"pr-{uuid.uuid4().hex[:8]}"
    catalog = tmp_path / "sandboxd.yaml"
    catalog.write_text(CATALOG)
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.otlp_http_url,
        "OTEL_SERVICE_NAME": "sandboxd-kube",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "SANDBOXD_HEALTH_TIMEOUT": "120",
    }
    args = ["--runtime", "kubernetes", "--kubeconfig", str(kube.kubeconfig)]
    with (
        running_sandboxd(tmp_path / "data", catalog=catalog, env=env, args=args) as server,
        server.client() as api,
    ):
        assert api.post("/v1/sandboxes", json={"name": name}).status_code == 201
        poll.until(
            lambda: api.get(f"/v1/sandboxes/{name}").json()["phase"],
            lambda phase: phase in {"Ready", "Failed"},
            timeout=90,
            what=f"{name} Ready",
            context=server.log,
        )
        assert api.get(f"/v1/sandboxes/{name}").json()["phase"] == "Ready"
        api.delete(f"/v1/sandboxes/{name}")

    def ours(spans: list[Span]) -> list[Span]:
        return [
            s
            for s in spans
            if s.service == "sandboxd-kube" and f"sbx-{name}" in s.attributes.get("url.full", "")
        ]

    spans = ours(collector.wait_for(ours, what=f"the Kubernetes calls for {name}"))
    assert all(s.kind == "client" for s in spans)
    assert all(
        s.attributes["url.full"].startswith(f"https://127.0.0.1:{kube.port}/") for s in spans
    )
    assert {s.attributes["http.request.method"] for s in spans} >= {"PATCH"}, "server-side apply"
    assert all(s.attributes["network.protocol.version"] == "2" for s in spans)
    assert all(isinstance(s.attributes["http.response.status_code"], int) for s in spans)
    assert {s.name for s in spans} <= {"GET", "PATCH", "POST", "PUT", "DELETE"}
    everything = {s.span_id: s for s in collector.spans()}
    parents = [everything.get(s.parent or "") for s in spans]
    assert all(p is not None and p.name == "reconcile" for p in parents), parents
    assert {p.attributes["sandboxd.sandbox"] for p in parents if p} == {name}
    assert all(p.kind == "internal" and p.parent is None for p in parents if p)
    assert len({s.trace_id for s in spans}) < len(spans)  # a reconcile's calls share a trace
