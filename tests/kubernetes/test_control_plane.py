"""The test control plane itself is real: RBAC, namespace deletion finalized by the namespace
controller (not a fake that forgets objects), and Deployments that become Available because the
scheduler binds their Pods to kwok's fake Nodes and kwok reports them Ready (no status patching)."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import poll
from tests.support.kube import NODES, KubeControlPlane, assets


def test_a_deleted_namespace_is_finalized_by_the_namespace_controller(
    kube: KubeControlPlane,
) -> None:
    name = f"sbx-smoke-{uuid.uuid4().hex[:6]}"
    with kube.client() as client:
        created = client.post(
            "/api/v1/namespaces",
            json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        assert created.status_code == 201, created.text
        client.post(
            f"/api/v1/namespaces/{name}/configmaps",
            json={"metadata": {"name": "c"}, "data": {"k": "v"}},
        )
        assert client.delete(f"/api/v1/namespaces/{name}").status_code == 200
        poll.until(
            lambda: client.get(f"/api/v1/namespaces/{name}").status_code == 404,
            timeout=60,
            what=f"namespace {name} to be finalized",
            context=lambda: kube.log("kube-controller-manager"),
        )


def test_rbac_is_enforced_for_other_users(kube: KubeControlPlane) -> None:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": "nobody",
            "resourceAttributes": {"verb": "list", "resource": "secrets", "namespace": "default"},
        },
    }
    with kube.client() as client:
        answer = client.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json=review)
    assert answer.status_code == 201
    assert answer.json()["status"]["allowed"] is False


def create_namespace(client: httpx.Client) -> str:
    name = f"sbx-plane-{uuid.uuid4().hex[:6]}"
    created = client.post("/api/v1/namespaces", json={"metadata": {"name": name}})
    assert created.status_code == 201, created.text
    return name


def deployment(name: str, *, resources: dict[str, Any] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": "registry.invalid/sandboxd/agent:1"}
    if resources is not None:
        container["resources"] = resources
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            },
        },
    }


def wait_available(
    kube: KubeControlPlane, client: httpx.Client, namespace: str, name: str
) -> dict[str, Any]:
    """The Deployment once its status says one available replica and Available=True."""
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"

    def available(status: dict[str, Any]) -> bool:
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        return status.get("availableReplicas") == 1 and conditions.get("Available") == "True"

    def context() -> str:
        pods = client.get(f"/api/v1/namespaces/{namespace}/pods").json()["items"]
        return (
            f"pods: {json.dumps([p.get('status') for p in pods])}\n"
            f"{kube.log('kube-scheduler')}\n{kube.log('kwok')}\n{kube.log('kube-controller-manager')}"
        )

    status: dict[str, Any] = poll.until(
        lambda: client.get(path).json().get("status", {}),
        available,
        timeout=60,
        what=f"{name} to become Available",
        context=context,
    )
    return status


def test_a_deployment_becomes_available_on_a_kwok_node(kube: KubeControlPlane) -> None:
    requests = {"requests": {"cpu": "100m", "memory": "128Mi"}}
    with kube.client() as client:
        namespace = create_namespace(client)
        created = client.post(
            f"/apis/apps/v1/namespaces/{namespace}/deployments",
            json=deployment("agent", resources=requests),
        )
        assert created.status_code == 201, created.text
        wait_available(kube, client, namespace, "agent")
        (pod,) = client.get(f"/api/v1/namespaces/{namespace}/pods").json()["items"]
    assert pod["spec"]["nodeName"] in NODES
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["hostIP"] == NODES[pod["spec"]["nodeName"]]
    assert pod["status"]["podIP"]


def test_a_scaled_down_pod_is_gone_not_left_terminating(kube: KubeControlPlane) -> None:
    """kwok removes a deleted Pod as a kubelet would once its containers stopped."""
    with kube.client() as client:
        namespace = create_namespace(client)
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
        assert client.post(path, json=deployment("agent")).status_code == 201
        wait_available(kube, client, namespace, "agent")
        scaled = client.patch(
            f"{path}/agent/scale",
            json={"spec": {"replicas": 0}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert scaled.status_code == 200, scaled.text
        poll.until(
            lambda: client.get(f"/api/v1/namespaces/{namespace}/pods").json()["items"],
            lambda pods: not pods,
            timeout=30,
            what="the pods to be gone",
            context=lambda: kube.log("kwok"),
        )


def test_a_deployment_under_quota_and_limit_range_defaults_becomes_available(
    kube: KubeControlPlane,
) -> None:
    """What the sandboxd runtime creates per sandbox namespace: hard limits that only admit Pods
    with requests and limits, which the LimitRange fills in."""
    quota = {"limits.cpu": "4", "requests.cpu": "4", "limits.memory": "8Gi",
             "requests.memory": "8Gi", "pods": "20"}  # fmt: skip
    limits = {"type": "Container", "default": {"cpu": "500m", "memory": "512Mi"},
              "defaultRequest": {"cpu": "50m", "memory": "64Mi"}}  # fmt: skip
    with kube.client() as client:
        namespace = create_namespace(client)
        for plural, obj in (
            ("resourcequotas", {"metadata": {"name": "sandbox"}, "spec": {"hard": quota}}),
            ("limitranges", {"metadata": {"name": "sandbox"}, "spec": {"limits": [limits]}}),
        ):
            response = client.post(f"/api/v1/namespaces/{namespace}/{plural}", json=obj)
            assert response.status_code == 201, response.text
        created = client.post(
            f"/apis/apps/v1/namespaces/{namespace}/deployments", json=deployment("agent")
        )
        assert created.status_code == 201, created.text
        wait_available(kube, client, namespace, "agent")
        (pod,) = client.get(f"/api/v1/namespaces/{namespace}/pods").json()["items"]
        used = _quota_used(kube, client, namespace)
    assert pod["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "500m", "memory": "512Mi"},
        "requests": {"cpu": "50m", "memory": "64Mi"},
    }
    assert used["pods"] == "1"
    assert used["limits.cpu"] == "500m"


def _quota_used(kube: KubeControlPlane, client: httpx.Client, namespace: str) -> dict[str, str]:
    """The quota's usage once the resource-quota controller has counted the running Pod."""
    path = f"/api/v1/namespaces/{namespace}/resourcequotas/sandbox"
    used = poll.until(
        lambda: client.get(path).json().get("status", {}).get("used", {}),
        lambda used: used.get("pods") == "1",
        timeout=30,
        what="the quota to count the pod",
        context=lambda: kube.log("kube-controller-manager"),
    )
    return dict(used)


def test_kubectl_from_the_assets_talks_to_the_plane(kube: KubeControlPlane) -> None:
    result = subprocess.run(
        [str(kube.bin("kubectl")), "--kubeconfig", str(kube.kubeconfig), "get", "ns", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    names = {item["metadata"]["name"] for item in json.loads(result.stdout)["items"]}
    assert {"default", "kube-system"} <= names


def test_a_service_account_user_is_held_to_rbac_and_granted_by_it(kube: KubeControlPlane) -> None:
    user = "system:serviceaccount:sandboxd:sandboxd"
    with kube.client() as admin:
        namespace = create_namespace(admin)
        with kube.client(user) as sandboxd:
            denied = sandboxd.get(f"/apis/apps/v1/namespaces/{namespace}/deployments")
            assert denied.status_code == 403, denied.text
            binding = {
                "metadata": {"name": "sandboxd"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "edit"},
                "subjects": [{"kind": "ServiceAccount", "namespace": "sandboxd", "name": "sandboxd"}],
            }  # fmt: skip
            path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"
            assert admin.post(path, json=binding).status_code == 201
            poll.until(
                lambda: sandboxd.get(f"/apis/apps/v1/namespaces/{namespace}/deployments"),
                lambda listed: listed.status_code == 200,
                timeout=10,
                what="the binding to grant the service account",
            )
    kubectl = [str(kube.bin("kubectl")), "--kubeconfig", str(kube.kubeconfig_for(user))]
    whoami = subprocess.run(
        [*kubectl, "auth", "whoami", "-o", "json"], capture_output=True, text=True, timeout=60
    )
    assert whoami.returncode == 0, whoami.stderr
    info = json.loads(whoami.stdout)["status"]["userInfo"]
    assert info["username"] == user
    assert "system:serviceaccounts:sandboxd" in info["groups"]


def test_the_istio_virtual_service_crd_is_served(kube: KubeControlPlane) -> None:
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "agent"},
        "spec": {"hosts": ["agent"], "http": [{"route": [{"destination": {"host": "agent"}}]}]},
    }
    with kube.client() as client:
        namespace = create_namespace(client)
        created = client.post(
            f"/apis/networking.istio.io/v1/namespaces/{namespace}/virtualservices", json=vs
        )
        assert created.status_code == 201, created.text
        read = client.get(
            f"/apis/networking.istio.io/v1beta1/namespaces/{namespace}/virtualservices/agent"
        )
    assert read.status_code == 200
    assert read.json()["spec"] == vs["spec"]


def test_assets_without_the_scheduler_kwok_and_kubectl_are_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    with pytest.raises(RuntimeError, match="has no kube-scheduler, kwok, kubectl"):
        assets()
