"""The client's error tree, provoked from the real apiserver: each failure arrives as the class
its Status means, so callers catch by meaning and never read numbers or words."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandboxd.runtime.kubernetes import config, errors
from sandboxd.runtime.kubernetes.client import KubeClient, object_path
from tests.support.kube import KubeControlPlane
from tests.support.server import free_port

HOLD = "test.sandboxd.dev/hold"


@pytest.fixture
async def client(kube: KubeControlPlane) -> AsyncIterator[KubeClient]:
    kube_client = KubeClient(config.from_kubeconfig(kube.kubeconfig))
    try:
        yield kube_client
    finally:
        await kube_client.close()


@pytest.fixture
async def namespace(client: KubeClient) -> AsyncIterator[str]:
    name = f"errors-{uuid.uuid4().hex[:6]}"
    await client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    await client.delete(f"/api/v1/namespaces/{name}")


def _limits(namespace: str, name: str, **meta: Any) -> dict[str, Any]:
    """A small object of a kind the client knows (it has no use for ConfigMaps)."""
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": name, "namespace": namespace, **meta},
        "spec": {"limits": [{"type": "Container", "default": {"cpu": "100m"}}]},
    }


async def test_missing_objects_are_not_found(client: KubeClient, namespace: str) -> None:
    assert await client.get(f"/api/v1/namespaces/{namespace}/limitranges/nope") is None
    with pytest.raises(errors.NotFound):
        await client.list("/api/v1/no-such-resources")


async def test_a_second_create_already_exists_and_a_stale_write_conflicts(
    client: KubeClient, namespace: str
) -> None:
    created = await client.write(_limits(namespace, "a"), create=True)
    with pytest.raises(errors.AlreadyExists):
        await client.write(_limits(namespace, "a"), create=True)
    changed = {**created, "spec": {"limits": [{"type": "Container", "default": {"cpu": "1"}}]}}
    await client.write(changed, create=False)  # moves the resourceVersion on
    with pytest.raises(errors.Conflict) as stale:
        await client.write(created, create=False)
    assert type(stale.value) is errors.Conflict


async def test_an_invalid_object_is_invalid_with_its_causes(
    client: KubeClient, namespace: str
) -> None:
    labels = {"app": "d"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": namespace},
        "spec": {
            "replicas": -1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "acme/d:1"}]},
            },
        },
    }
    with pytest.raises(errors.Invalid) as refused:
        await client.apply(deployment)
    assert [c.field for c in refused.value.causes] == ["spec.replicas"]


async def test_rbac_refusals_are_forbidden(kube: KubeControlPlane) -> None:
    nobody = KubeClient(config.from_kubeconfig(kube.kubeconfig_for("nobody")))
    try:
        with pytest.raises(errors.Forbidden) as refused:
            await nobody.list("/api/v1/namespaces")
    finally:
        await nobody.close()
    assert type(refused.value) is errors.Forbidden


async def test_creating_in_a_namespace_being_deleted_is_namespace_terminating(
    client: KubeClient, namespace: str
) -> None:
    held = await client.write(_limits(namespace, "held", finalizers=[HOLD]), create=True)
    await client.delete(f"/api/v1/namespaces/{namespace}")  # Terminating while the finalizer holds
    try:
        # the admission plugin reads the namespace's phase from a cache: until it has seen
        # the deletion, creates still pass
        refused = await _until_refused(client, namespace)
        assert type(refused) is errors.NamespaceTerminating
    finally:
        current = await client.get(object_path(held))
        assert current is not None
        current["metadata"]["finalizers"] = []
        await client.write(current, create=False)


async def test_no_answer_is_unreachable() -> None:
    closed = config.Connection(f"http://127.0.0.1:{free_port()}", False, config.Credentials())
    nowhere = KubeClient(closed)
    try:
        with pytest.raises(errors.Unreachable):
            await nowhere.list("/api/v1/namespaces")
    finally:
        await nowhere.close()


async def _until_refused(client: KubeClient, namespace: str) -> errors.KubeError:
    """The error of the first create in `namespace` that is refused (within 20 s)."""
    attempt = 0
    async with asyncio.timeout(20):
        while True:
            try:
                await client.write(_limits(namespace, f"late-{attempt}"), create=True)
            except errors.KubeError as e:
                return e
            attempt += 1
            await asyncio.sleep(0.05)
