"""cluster-mcp: a fake Kubernetes cluster behind MCP tools, for the troubleshooter agent.

    PORT=7412 python3 cluster_mcp.py [--schema v1|v2]      (or CLUSTER_MCP_SCHEMA=v2)

Tools (streamable HTTP on `/mcp`, `GET /healthz`):
- `list_pods(namespace)` → `{"namespace", "pods": [{"name", "phase", "status", "ready",
  "restarts", "age", "node"}]}`, `status` being what `kubectl get pods` shows;
- `describe_pod(namespace, name)` → the pod as `kubectl get pod -o json` would summarise it:
  `phase`, `containerStatuses[]` (`restartCount`, `state`, `lastState.terminated` with
  `exitCode` and `reason`) and `events`.

The cluster is seeded and fixed: namespace `demo` runs a healthy web frontend, a cache and
`orders-api`, which is in `CrashLoopBackOff`. Unknown namespaces and pods are tool errors.

Schema v2 is the pull request's change: `describe_pod` renames `lastState` to
`lastTermination` in each container status. Nothing else changes — a rename that unit tests and
evals of either side never see, and that only the integrated agent trips over.
"""

from __future__ import annotations

import argparse
import copy
import os
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_serving import port_from_env, serve

SCHEMAS = ("v1", "v2")

_CRASH_EVENTS = [
    {
        "type": "Normal",
        "reason": "Scheduled",
        "count": 1,
        "age": "34m",
        "message": "Successfully assigned demo/orders-api-5f6b7c8d9-q4m7z to kind-worker2",
    },
    {
        "type": "Normal",
        "reason": "Pulled",
        "count": 8,
        "age": "6m",
        "message": 'Container image "ghcr.io/acme/orders-api:1.14.2" already present on machine',
    },
    {
        "type": "Normal",
        "reason": "Started",
        "count": 8,
        "age": "6m",
        "message": "Started container orders-api",
    },
    {
        "type": "Warning",
        "reason": "BackOff",
        "count": 141,
        "age": "2m",
        "message": "Back-off restarting failed container orders-api in pod "
        "orders-api-5f6b7c8d9-q4m7z_demo(3f1c2a9e-8b7d-4e11-9a3c-5d2e7f60b1aa)",
    },
]


def _container(
    name: str, image: str, *, restarts: int, state: dict[str, Any], last: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "ready": "running" in state,
        "started": "running" in state,
        "restartCount": restarts,
        "state": state,
        "lastState": last,
    }


def _pod(
    name: str,
    *,
    node: str,
    age: str,
    containers: list[dict[str, Any]],
    events: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": "demo",
        "node": node,
        "age": age,
        "phase": "Running",
        "labels": {"app": name.rsplit("-", 2)[0] if name.count("-") >= 2 else name},
        "containerStatuses": containers,
        "events": events,
    }


def seed_cluster() -> dict[str, dict[str, dict[str, Any]]]:
    """namespace → pod name → pod; the same every time."""
    running = {"running": {"startedAt": "2025-06-02T08:11:04Z"}}
    pods = [
        _pod(
            "web-frontend-7d9c8b6f4-x2k9p",
            node="kind-worker",
            age="2d",
            events=[],
            containers=[
                _container("web", "ghcr.io/acme/web:3.2.0", restarts=0, state=running, last={})
            ],
        ),
        _pod(
            "redis-0",
            node="kind-worker",
            age="9d",
            events=[],
            containers=[
                _container(
                    "redis",
                    "redis:7.2-alpine",
                    restarts=1,
                    state=running,
                    last={
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "finishedAt": "2025-05-27T03:00:12Z",
                        }
                    },
                )
            ],
        ),
        _pod(
            "orders-api-5f6b7c8d9-q4m7z",
            node="kind-worker2",
            age="34m",
            events=_CRASH_EVENTS,
            containers=[
                _container(
                    "orders-api",
                    "ghcr.io/acme/orders-api:1.14.2",
                    restarts=7,
                    state={
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": "back-off 5m0s restarting failed container=orders-api "
                            "pod=orders-api-5f6b7c8d9-q4m7z_demo",
                        }
                    },
                    last={
                        "terminated": {
                            "exitCode": 1,
                            "reason": "Error",
                            "startedAt": "2025-06-04T09:41:55Z",
                            "finishedAt": "2025-06-04T09:41:56Z",
                        }
                    },
                )
            ],
        ),
    ]
    return {"demo": {p["name"]: p for p in pods}, "default": {}}


def kubectl_status(pod: dict[str, Any]) -> str:
    """The STATUS column: a waiting or terminated container's reason wins over the phase."""
    for status in pod["containerStatuses"]:
        state = status["state"]
        for kind in ("waiting", "terminated"):
            if kind in state:
                return str(state[kind]["reason"])
    return str(pod["phase"])


def summary(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod["containerStatuses"]
    ready = sum(1 for s in statuses if s["ready"])
    return {
        "name": pod["name"],
        "phase": pod["phase"],
        "status": kubectl_status(pod),
        "ready": f"{ready}/{len(statuses)}",
        "restarts": sum(s["restartCount"] for s in statuses),
        "age": pod["age"],
        "node": pod["node"],
    }


def render(pod: dict[str, Any], *, schema: str) -> dict[str, Any]:
    """The pod in the result schema this server speaks."""
    out = copy.deepcopy(pod)
    if schema == "v2":
        for status in out["containerStatuses"]:
            status["lastTermination"] = status.pop("lastState")
    return out


def build_server(*, schema: str) -> MCPServer:
    cluster = seed_cluster()
    server = MCPServer(name="cluster-mcp", version="2.0.0" if schema == "v2" else "1.0.0")

    def namespace_pods(namespace: str) -> dict[str, dict[str, Any]]:
        if namespace not in cluster:
            raise ToolError(f'namespaces "{namespace}" not found')
        return cluster[namespace]

    @server.tool()
    def list_pods(namespace: str) -> dict[str, Any]:
        """The pods of a namespace, as `kubectl get pods` lists them."""
        pods = namespace_pods(namespace)
        return {"namespace": namespace, "pods": [summary(p) for p in pods.values()]}

    @server.tool()
    def describe_pod(namespace: str, name: str) -> dict[str, Any]:
        """One pod in detail: phase, container statuses (with the last termination) and
        events."""
        pod = namespace_pods(namespace).get(name)
        if pod is None:
            raise ToolError(f'pods "{name}" not found in namespace "{namespace}"')
        return render(pod, schema=schema)

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--schema", choices=SCHEMAS, default=os.environ.get("CLUSTER_MCP_SCHEMA", "v1")
    )
    parser.add_argument("--port", type=int, default=None, help="default: $PORT")
    args = parser.parse_args()
    port = args.port or port_from_env()
    serve(build_server(schema=args.schema), port=port, health=f"cluster-mcp {args.schema}")


if __name__ == "__main__":
    main()
