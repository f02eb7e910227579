"""manifests/ in the test control plane: kubectl against it, and the questions the tests ask it
(may this user do that? has this admission policy taken effect yet?)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import httpx
import yaml

from tests.support.kube import ROOT, KubeControlPlane

MANIFESTS = ROOT / "manifests"
SANDBOXD = "system:serviceaccount:sandboxd:sandboxd"
ROUTER = "system:serviceaccount:sandboxd:sandboxd-router"
MANAGED_BY = {"app.kubernetes.io/managed-by": "sandboxd"}
Obj = dict[str, Any]
_COLLECTIONS = {
    "Namespace": "/api/v1/namespaces",
    "Service": "/api/v1/namespaces/{ns}/services",
    "ResourceQuota": "/api/v1/namespaces/{ns}/resourcequotas",
    "LimitRange": "/api/v1/namespaces/{ns}/limitranges",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    "VirtualService": "/apis/networking.istio.io/v1/namespaces/{ns}/virtualservices",
}


def kubectl(kube: KubeControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl as admin (the version the control plane runs), never raising: callers assert on
    the exit code with stderr in the message."""
    argv = [str(kube.bin("kubectl")), f"--kubeconfig={kube.kubeconfig}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180)


def rendered(kube: KubeControlPlane) -> list[Obj]:
    """The objects `kubectl apply -k manifests/` sends."""
    built = kubectl(kube, "kustomize", str(MANIFESTS))
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def may(
    client: httpx.Client,
    user: str,
    verb: str,
    resource: str,
    *,
    group: str = "",
    namespace: str = "",
    subresource: str = "",
) -> bool:
    """RBAC's answer (a SubjectAccessReview) for `user` with a service account's groups."""
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{user.split(':')[2]}"]
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": [*groups, "system:authenticated"],
            "resourceAttributes": {
                "verb": verb,
                "group": group,
                "resource": resource,
                "subresource": subresource,
                "namespace": namespace,
            },
        },
    }
    answer = client.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json=review)
    assert answer.status_code == 201, answer.text
    return bool(answer.json()["status"].get("allowed"))


def path_of(obj: Obj) -> str:
    """The object's URL path, from its kind, namespace and name."""
    meta = obj["metadata"]
    return _COLLECTIONS[obj["kind"]].format(ns=meta.get("namespace")) + f"/{meta['name']}"


# Small objects for the tests to write, each with its namespace so that `path_of` can place it.


def namespace(name: str, labels: dict[str, str] | None = None) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}  # fmt: skip


def deployment(name: str, ns: str) -> Obj:
    labels = {"app": name}
    pod = {"containers": [{"name": name, "image": "registry.invalid/acme/web:1"}]}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": pod}}}  # fmt: skip


def service(name: str, ns: str, **spec: Any) -> Obj:
    ports = [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name}, "ports": ports, **spec}}  # fmt: skip


def virtual_service(name: str, ns: str) -> Obj:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": ns, "labels": dict(MANAGED_BY)},
            "spec": {"hosts": [f"web.{ns}.svc.cluster.local"]}}  # fmt: skip


def apply(client: httpx.Client, path: str, obj: Obj, *, dry_run: bool = False) -> httpx.Response:
    """Server-side apply as the runtime does it (field manager sandboxd, forced)."""
    params = {"fieldManager": "sandboxd", "force": "true"}
    if dry_run:
        params["dryRun"] = "All"
    headers = {"Content-Type": "application/apply-patch+yaml"}
    return client.patch(path, params=params, content=json.dumps(obj), headers=headers)


def denied_by(response: httpx.Response, policy: str) -> bool:
    """Whether the apiserver refused the request because of the admission policy `policy`."""
    message = response.json().get("message", "") if response.status_code == 403 else ""
    return f"ValidatingAdmissionPolicy '{policy}'" in message
