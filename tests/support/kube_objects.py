"""A baseline Deployment and Service as a cluster would hold them, for the runtime's tests."""

from __future__ import annotations

import json
from typing import Any

import httpx

from sandboxd.runtime.kubernetes.client import object_path


def apply(client: httpx.Client, obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply as field manager `sandboxd`, as the runtime does."""
    response = client.patch(
        object_path(obj),
        params={"fieldManager": "sandboxd", "force": "true"},
        content=json.dumps(obj),
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


BASELINE_DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "cluster-mcp", "namespace": "baseline"},
    "spec": {
        "selector": {"matchLabels": {"app": "cluster-mcp"}},
        "template": {
            "metadata": {"labels": {"app": "cluster-mcp"}},
            "spec": {
                "containers": [
                    {"name": "sidecar", "image": "envoy:1"},
                    {"name": "cluster-mcp", "image": "acme/cluster-mcp:1.0", "args": ["--v1"],
                     "env": [{"name": "SCHEMA", "value": "v1"}, {"name": "KEEP", "value": "1"}]},
                ]
            },
        },
    },
}  # fmt: skip
BASELINE_SERVICE = {
    "spec": {"selector": {"app": "cluster-mcp"}, "clusterIP": "10.0.0.7",
             "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 31000}]}
}  # fmt: skip


def baseline_workload(
    name: str,
    namespace: str,
    *,
    image: str,
    mode: str,
    requests: dict[str, str],
    service_labels: dict[str, str] | None = None,
    service_annotations: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """A baseline Deployment (one container serving on 8080) and its Service (port 80)."""
    labels = {"app": name}
    container = {
        "name": name,
        "image": image,
        "ports": [{"containerPort": 8080}],
        "env": [{"name": "MODE", "value": mode}],
        "resources": {"requests": requests},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if service_labels is not None:
        metadata["labels"] = service_labels
    if service_annotations is not None:
        metadata["annotations"] = service_annotations
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }
    return [deployment, service]
