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
