"""The test control plane itself is real: RBAC, and namespace deletion finalized by the
namespace controller (not a fake that forgets objects)."""

from __future__ import annotations

import time
import uuid

from tests.support.kube import KubeControlPlane


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
        deadline = time.monotonic() + 60
        while client.get(f"/api/v1/namespaces/{name}").status_code != 404:
            assert time.monotonic() < deadline, (
                f"namespace {name} never finalized:\n{kube.log('kube-controller-manager')}"
            )
            time.sleep(0.2)


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
