"""The objects the Kubernetes runtime applies, as pure functions of the sandbox and the baseline.

Names are deterministic (`sbx-<sandbox>`, the service's name inside it), so a reconcile can be
repeated and a crash converges; everything carries `app.kubernetes.io/managed-by=sandboxd` so
orphans can be found. No I/O here: `sandboxd.runtime.kubernetes.client` applies these.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from sandboxd.core.labels import MODEL_VERSION_LABEL, PROMPT_VERSION_LABEL
from sandboxd.core.spec import AgentVersion, ForkSpec

MANAGED_BY_KEY = "app.kubernetes.io/managed-by"
MANAGED_BY = {MANAGED_BY_KEY: "sandboxd"}
MANAGED = f"{MANAGED_BY_KEY}=sandboxd"  # the selector of everything sandboxd made
SANDBOX = "sandboxd.dev/sandbox"
SERVICE = "sandboxd.dev/service"
EXPIRES = "sandboxd.dev/expires-at"
ROUTE_PREFIX = "sandbox-"
POD_SECURITY = "pod-security.kubernetes.io/enforce"
Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Quota:
    cpu: str = "4"
    memory: str = "8Gi"
    pods: int = 20


def namespace_name(sandbox: str) -> str:
    return f"sbx-{sandbox}"


def namespace(sandbox: str, *, expires_at: str, pod_security: str = "baseline") -> Obj:
    """Pod Security admission at `baseline` by default: a fork copies its baseline's pod
    template and runs PR code, so no hostNetwork, hostPath or privileged containers (which would
    also step around the network policies)."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace_name(sandbox),
            "labels": {**MANAGED_BY, SANDBOX: sandbox, POD_SECURITY: pod_security},
            "annotations": {EXPIRES: expires_at},
        },
    }


def resource_quota(sandbox: str, quota: Quota) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": "sandboxd",
            "namespace": namespace_name(sandbox),
            "labels": dict(MANAGED_BY),
        },
        "spec": {
            "hard": {
                "limits.cpu": quota.cpu,
                "limits.memory": quota.memory,
                "requests.cpu": quota.cpu,
                "requests.memory": quota.memory,
                "pods": str(quota.pods),
            }
        },
    }


def limit_range(sandbox: str) -> Obj:
    """Defaults for containers that state none, so the quota can admit them."""
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {
            "name": "sandboxd",
            "namespace": namespace_name(sandbox),
            "labels": dict(MANAGED_BY),
        },
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {"cpu": "500m", "memory": "512Mi"},
                    "defaultRequest": {"cpu": "50m", "memory": "64Mi"},
                }
            ]
        },
    }


def network_policies(
    sandbox: str, *, router_namespace: str, baseline_namespaces: list[str], allow_cidrs: list[str]
) -> list[Obj]:
    """Ingress only from the router's namespace and the sandbox's own; egress only to DNS, the
    router, the baseline namespaces and an allowlist."""
    ns = namespace_name(sandbox)

    def from_ns(name: str) -> Obj:
        return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}

    meta = {"namespace": ns, "labels": dict(MANAGED_BY)}
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "sandboxd-ingress", **meta},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [from_ns(router_namespace), from_ns(ns)]}],
        },
    }
    egress_to = [from_ns(router_namespace), from_ns(ns), *(from_ns(b) for b in baseline_namespaces)]
    egress_to += [{"ipBlock": {"cidr": cidr}} for cidr in allow_cidrs]
    dns = {
        "to": [from_ns("kube-system")],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    egress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "sandboxd-egress", **meta},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [dns, {"to": egress_to}]},
    }
    return [ingress, egress]


def fork_deployment(
    baseline: Obj,
    *,
    sandbox: str,
    service: str,
    fork: ForkSpec,
    agent: AgentVersion | None,
    progress_deadline: int = 600,
) -> Obj:
    """The baseline Deployment's pod template with the fork's image, args and env applied, in the
    sandbox's namespace, selected by sandbox and service labels only."""
    template = copy.deepcopy(baseline["spec"]["template"])
    labels = {**MANAGED_BY, SANDBOX: sandbox, SERVICE: service, **_version_labels(agent)}
    template.setdefault("metadata", {})["labels"] = {
        **template.get("metadata", {}).get("labels", {}),
        **labels,
    }
    containers = template["spec"]["containers"]
    target = next((c for c in containers if c.get("name") == service), containers[0])
    if fork.image:
        target["image"] = fork.image
    if fork.args is not None:
        target["args"] = list(fork.args)
    if fork.command is not None:
        target["command"] = list(fork.command)
    if fork.env:
        kept = [e for e in target.get("env", []) if e.get("name") not in fork.env]
        target["env"] = kept + [{"name": k, "value": v} for k, v in fork.env.items()]
    for container in [*template["spec"].get("initContainers", []), *containers]:
        _limits_from_requests(container)
    selector = {SANDBOX: sandbox, SERVICE: service}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": service, "namespace": namespace_name(sandbox), "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": template,
            # an update surges one new pod and removes the old one only once the new one is
            # available: the old copy serves until then, and on if the new one never is
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            # a rollout without progress this long is ProgressDeadlineExceeded: the fork (or its
            # update) fails
            "progressDeadlineSeconds": progress_deadline,
        },
    }


def _limits_from_requests(container: Obj) -> None:
    """A request without a limit would get the LimitRange's default limit, and a request above
    that default makes the pod invalid: such a container gets a limit equal to its request
    (the quota counts both)."""
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = dict(resources.get("limits") or {})
    for key in ("cpu", "memory"):
        if key in requests and key not in limits:
            limits[key] = requests[key]
    if limits:
        container["resources"] = {**resources, "limits": limits}


def fork_service(baseline: Obj, *, sandbox: str, service: str) -> Obj:
    """A Service with the baseline Service's ports, selecting the fork's pods."""
    ports = [
        {
            k: v
            for k, v in port.items()
            if k in ("name", "port", "targetPort", "protocol", "appProtocol")
        }
        for port in baseline["spec"]["ports"]
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service,
            "namespace": namespace_name(sandbox),
            "labels": {**MANAGED_BY, SANDBOX: sandbox, SERVICE: service},
        },
        "spec": {"selector": {SANDBOX: sandbox, SERVICE: service}, "ports": ports},
    }


def fork_upstream(sandbox: str, service: str, port: int) -> str:
    return f"http://{service}.{namespace_name(sandbox)}.svc.cluster.local:{port}"


def baggage_regex(key_name: str, routing_key: str) -> str:
    """An RE2 regex (Istio matches whole header values) that is true exactly when the baggage
    list has the member `key_name=routing_key`: members are split on commas with optional
    whitespace; the value ends at `;` (properties), `,`, whitespace or the end."""
    key, value = re.escape(key_name), re.escape(routing_key)
    return rf"^(.*,)?[ \t]*{key}[ \t]*=[ \t]*{value}[ \t]*(;[^,]*)?(,.*)?$"


def label_value(value: str) -> str:
    """A Kubernetes label value from free text: [A-Za-z0-9._-], at most 63, alphanumeric ends."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", value)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)


def _version_labels(agent: AgentVersion | None) -> dict[str, str]:
    if agent is None:
        return {}
    out = {}
    if agent.prompt_version:
        out[PROMPT_VERSION_LABEL] = label_value(agent.prompt_version)
    if agent.model_version:
        out[MODEL_VERSION_LABEL] = label_value(agent.model_version)
    return out


def sandbox_route(
    *, sandbox: str, service: str, port: int, baggage_key: str, routing_key: str
) -> Obj:
    """One sandbox's rule in a baseline Service's VirtualService: baggage naming the sandbox
    sends the request to the fork's Service."""
    fork_host = f"{service}.{namespace_name(sandbox)}.svc.cluster.local"
    return {
        "name": f"{ROUTE_PREFIX}{sandbox}",
        "match": [{"headers": {"baggage": {"regex": baggage_regex(baggage_key, routing_key)}}}],
        "route": [{"destination": {"host": fork_host, "port": {"number": port}}}],
    }


def virtual_service(
    *, namespace: str, service: str, port: int, routes: list[Obj], resource_version: str | None
) -> Obj:
    """The VirtualService for one baseline Service: every sandbox's rule, then the baseline.

    One object per host, because Istio does not merge several VirtualServices of one host for
    sidecars (it reports IST0109 and picks one); rules are kept sorted so a rewrite that changes
    nothing writes nothing."""
    host = f"{service}.{namespace}.svc.cluster.local"
    default = {
        "name": "baseline",
        "route": [{"destination": {"host": host, "port": {"number": port}}}],
    }
    metadata: Obj = {
        "name": virtual_service_name(service),
        "namespace": namespace,
        "labels": {**MANAGED_BY, SERVICE: service},
    }
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": metadata,
        "spec": {"hosts": [host], "http": [*sorted(routes, key=lambda r: r["name"]), default]},
    }


def routed_sandboxes(virtual_service: Obj) -> dict[str, Obj]:
    """The sandbox rules of a VirtualService written by `virtual_service`, by sandbox name."""
    rules = (virtual_service.get("spec") or {}).get("http") or []
    return {
        r["name"][len(ROUTE_PREFIX) :]: r
        for r in rules
        if isinstance(r, dict) and str(r.get("name", "")).startswith(ROUTE_PREFIX)
    }


def virtual_service_name(service: str) -> str:
    return f"sandboxd-{service}"
