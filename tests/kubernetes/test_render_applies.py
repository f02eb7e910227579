"""The runtime's rendered objects are accepted by a real kube-apiserver (server-side apply, field
manager `sandboxd`) and stored as rendered; deleting the namespace removes them all."""

from __future__ import annotations

import uuid

from sandboxd.core.spec import AgentVersion, ForkSpec
from sandboxd.runtime.kubernetes import render
from sandboxd.runtime.kubernetes.client import object_path
from tests.support import poll
from tests.support.kube import KubeControlPlane
from tests.support.kube_objects import BASELINE_DEPLOYMENT, BASELINE_SERVICE, apply


def test_a_sandbox_namespace_and_fork_apply_as_rendered_and_delete_whole(
    kube: KubeControlPlane,
) -> None:
    sandbox = f"pr-{uuid.uuid4().hex[:6]}"
    fork = ForkSpec(service="cluster-mcp", image="acme/cluster-mcp:2.0", env={"SCHEMA": "v2"})
    objects = [
        render.namespace(sandbox, expires_at="2026-11-22T08:00:00Z"),
        render.resource_quota(sandbox, render.Quota()),
        render.limit_range(sandbox),
        *render.network_policies(sandbox, router_namespace="sandboxd", baseline_namespaces=["baseline"], allow_cidrs=[]),
        render.fork_deployment(BASELINE_DEPLOYMENT, sandbox=sandbox, service="cluster-mcp", fork=fork,
                               agent=AgentVersion(prompt_version="v2", model_version="m-1")),
        render.fork_service(BASELINE_SERVICE, sandbox=sandbox, service="cluster-mcp"),
    ]  # fmt: skip
    with kube.client() as client:
        stored = {
            obj["kind"] + "/" + obj["metadata"]["name"]: apply(client, obj) for obj in objects
        }
        deployment = stored["Deployment/cluster-mcp"]
        again = apply(client, next(o for o in objects if o["kind"] == "Deployment"))
        assert again["metadata"]["generation"] == 1  # re-applying the same object is a no-op
        container = deployment["spec"]["template"]["spec"]["containers"][1]
        assert container["image"] == "acme/cluster-mcp:2.0"
        assert {"name": "SCHEMA", "value": "v2"} in container["env"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert (
            labels["sandboxd.dev/prompt-version"] == "v2"
            and labels["sandboxd.dev/sandbox"] == sandbox
        )
        managers = {m["manager"] for m in deployment["metadata"]["managedFields"]}
        assert managers == {"sandboxd"}
        assert stored["ResourceQuota/sandboxd"]["spec"]["hard"]["pods"] == "20"
        ns = f"sbx-{sandbox}"
        assert (
            client.get(f"/api/v1/namespaces/{ns}").json()["metadata"]["labels"][
                "app.kubernetes.io/managed-by"
            ]
            == "sandboxd"
        )

        assert client.delete(f"/api/v1/namespaces/{ns}").status_code == 200
        poll.until(
            lambda: client.get(f"/api/v1/namespaces/{ns}").status_code == 404,
            timeout=60,
            what=f"namespace {ns} to be finalized",
            context=lambda: kube.log("kube-controller-manager"),
        )
        for obj in objects[1:]:
            assert client.get(object_path(obj)).status_code == 404
