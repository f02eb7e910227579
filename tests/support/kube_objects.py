"""A baseline Deployment and Service as a cluster would hold them, for the runtime's tests."""

from __future__ import annotations

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
