"""Updating a fork in place on Kubernetes (`PUT /v1/sandboxes/{name}`): the fork's Deployment
rolls out a new pod beside the serving one, which serves until the new one is Ready — and on,
with the sandbox `Failed` (`UpdateFailed`), if it never is.

kwok plays the kubelet (tests/support/kwok/stages.yaml): a pod whose image is tagged
`never-ready` runs but never passes its readiness check, one tagged `crash-loop` keeps exiting;
a test makes a pod's readiness check pass by writing its status, as a kubelet would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import poll
from tests.support.kube import KubeControlPlane
from tests.support.kube_objects import apply, baseline_workload
from tests.support.server import Sandboxd, running_sandboxd

BASELINE_NS = "rollout-shop"
CATALOG = f"""
services:
  - name: echo
    baseline: {{url: "http://echo.{BASELINE_NS}.svc.cluster.local:80"}}
    kubernetes: {{namespace: {BASELINE_NS}, deployment: echo, service: echo, port: 80}}
"""


@pytest.fixture(scope="module")
def baseline(kube: KubeControlPlane) -> Iterator[None]:
    with kube.client() as client:
        client.post("/api/v1/namespaces", json={"metadata": {"name": BASELINE_NS}})
        for obj in baseline_workload(
            "echo",
            BASELINE_NS,
            image="acme/echo:1.0",
            mode="v1",
            requests={"cpu": "100m", "memory": "64Mi"},
        ):
            apply(client, obj)
        yield
        client.delete(f"/api/v1/namespaces/{BASELINE_NS}")


def _sandboxd(
    tmp_path: Path, kube: KubeControlPlane, *args: str, health_timeout: int
) -> AbstractContextManager[Sandboxd]:
    """`health_timeout` is also the fork Deployments' progressDeadlineSeconds."""
    path = tmp_path / "sandboxd.yaml"
    path.write_text(CATALOG)
    return running_sandboxd(
        tmp_path / "data",
        catalog=path,
        args=["--runtime", "kubernetes", "--kubeconfig", str(kube.kubeconfig), *args],
        env={"SANDBOXD_HEALTH_TIMEOUT": str(health_timeout)},
    )


def _put(api: httpx.Client, name: str, image: str) -> dict[str, Any]:
    spec = {"name": name, "forks": [{"service": "echo", "image": image}]}
    answer = api.put(f"/v1/sandboxes/{name}", json=spec)
    assert answer.status_code in (200, 201), answer.text
    return dict(answer.json())


def _settled(server: Sandboxd, api: httpx.Client, name: str) -> dict[str, Any]:
    """The sandbox once a reconcile has judged it after the last write of its spec."""
    body: dict[str, Any] = poll.until(
        lambda: api.get(f"/v1/sandboxes/{name}").json(),
        lambda body: (
            body["phase"] in ("Provisioning", "Ready", "Failed") and body["reason"] != "Updated"
        ),
        timeout=60,
        what=f"a verdict on {name}",
        context=server.log,
    )
    return body


def _until_phase(
    server: Sandboxd, api: httpx.Client, name: str, phases: set[str], timeout: float = 90
) -> dict[str, Any]:
    body: dict[str, Any] = poll.until(
        lambda: api.get(f"/v1/sandboxes/{name}").json(),
        lambda body: body["phase"] in phases,
        timeout=timeout,
        what=f"{name} to be one of {phases}",
        context=server.log,
    )
    return body


def _serving(
    server: Sandboxd, api: httpx.Client, k8s: httpx.Client, name: str
) -> tuple[str, str, str]:
    """Create the sandbox with a good image and wait until it is Ready: its routing key, its
    fork's upstream, and the one pod serving it."""
    key = str(_put(api, name, "acme/echo:1")["routingKey"])
    first = _until_phase(server, api, name, {"Ready", "Failed"})
    assert first["phase"] == "Ready", first
    (old,) = _selected_pods(k8s, f"sbx-{name}")
    return key, str(first["forks"][0]["upstream"]), old


def _selected_pods(k8s: httpx.Client, ns: str) -> dict[str, dict[str, Any]]:
    """The pods the fork's Service sends traffic to (the Ready ones among them), by name."""
    selector = k8s.get(f"/api/v1/namespaces/{ns}/services/echo").json()["spec"]["selector"]
    labels = ",".join(f"{k}={v}" for k, v in selector.items())
    pods = k8s.get(f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": labels}).json()
    return {p["metadata"]["name"]: p for p in pods["items"]}


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _image(pod: dict[str, Any]) -> str:
    return str(pod["spec"]["containers"][0]["image"])


def _pass_readiness(k8s: httpx.Client, ns: str, pod: dict[str, Any]) -> None:
    """What the kubelet writes once the pod's readiness check passes."""
    ready = [{"type": t, "status": "True"} for t in ("ContainersReady", "Ready")]
    containers = [{"name": c["name"], "ready": True} for c in pod["spec"]["containers"]]
    patched = k8s.patch(
        f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}/status",
        json={"status": {"conditions": ready, "containerStatuses": containers}},
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text


def _route(api: httpx.Client, key: str) -> dict[str, str]:
    return dict(api.get("/v1/routes").json()["routes"][key]["forks"])


def _delete(server: Sandboxd, api: httpx.Client, k8s: httpx.Client, name: str) -> None:
    assert api.delete(f"/v1/sandboxes/{name}").status_code in (200, 202)
    _until_phase(server, api, name, {"Deleted"})
    assert k8s.get(f"/api/v1/namespaces/sbx-{name}").status_code == 404


def test_an_update_rolls_out_beside_the_serving_pod_and_replaces_it_once_ready(
    tmp_path: Path, kube: KubeControlPlane, baseline: None
) -> None:
    name = f"pr-{uuid.uuid4().hex[:8]}"
    ns = f"sbx-{name}"
    vs_path = f"/apis/networking.istio.io/v1/namespaces/{BASELINE_NS}/virtualservices/sandboxd-echo"
    with (
        _sandboxd(tmp_path, kube, "--istio", health_timeout=120) as server,
        server.client() as api,
        kube.client() as k8s,
    ):
        key, upstream, old = _serving(server, api, k8s, name)
        deployment = k8s.get(f"/apis/apps/v1/namespaces/{ns}/deployments/echo").json()
        assert deployment["spec"]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        }

        _put(api, name, "acme/echo:never-ready")  # held not-ready until the test says so
        updating = _settled(server, api, name)
        assert (updating["phase"], updating["reason"]) == ("Provisioning", "ForksUpdating")
        fork = updating["forks"][0]
        assert fork["upstream"] == upstream
        assert fork["message"] == "serving while its new copy starts"

        # The Service selects both pods; only the old one is Ready, so it alone gets traffic.
        pods = poll.until(
            lambda: _selected_pods(k8s, ns), lambda p: len(p) == 2, timeout=30,
            what="the new pod beside the old one",
        )  # fmt: skip
        (new,) = [p for n, p in pods.items() if n != old]
        assert _ready(pods[old]) and _image(pods[old]) == "acme/echo:1"
        assert not _ready(new) and _image(new) == "acme/echo:never-ready"
        # The sandbox's traffic still goes to its fork's Service, never to the baseline.
        assert _route(api, key) == {"echo": upstream}
        rules = {r["name"]: r for r in k8s.get(vs_path).json()["spec"]["http"]}
        assert rules[f"sandbox-{name}"]["route"][0]["destination"]["host"] == (
            f"echo.{ns}.svc.cluster.local"
        )
        again = api.get(f"/v1/sandboxes/{name}").json()
        assert (again["phase"], again["reason"]) == ("Provisioning", "ForksUpdating")

        _pass_readiness(k8s, ns, new)
        done = _until_phase(server, api, name, {"Ready", "Failed"})
        assert done["phase"] == "Ready", done
        assert done["forks"][0]["upstream"] == upstream
        remaining = poll.until(
            lambda: _selected_pods(k8s, ns), lambda p: old not in p, timeout=30,
            what="the old pod to be removed",
        )  # fmt: skip
        assert list(remaining) == [new["metadata"]["name"]]
        assert _ready(remaining[new["metadata"]["name"]])
        assert _route(api, key) == {"echo": upstream}
        _delete(server, api, k8s, name)
        assert f"sandbox-{name}" not in str(k8s.get(vs_path).json())


@pytest.mark.parametrize("broken", ["never-ready", "crash-loop"])
def test_an_update_that_never_gets_ready_fails_while_the_old_pod_serves_until_fixed(
    tmp_path: Path, kube: KubeControlPlane, baseline: None, broken: str
) -> None:
    name = f"pr-{uuid.uuid4().hex[:8]}"
    ns = f"sbx-{name}"
    with (
        _sandboxd(tmp_path, kube, health_timeout=4) as server,
        server.client() as api,
        kube.client() as k8s,
    ):
        key, upstream, old = _serving(server, api, k8s, name)

        _put(api, name, f"acme/echo:{broken}")
        failed = _until_phase(server, api, name, {"Failed", "Ready"})
        assert (failed["phase"], failed["reason"]) == ("Failed", "UpdateFailed"), failed
        assert "ProgressDeadlineExceeded" in failed["message"]
        assert "the old copy keeps serving" in failed["message"]
        assert failed["forks"][0]["upstream"] == upstream
        assert failed["forks"][0]["message"].startswith("serving; its new copy failed")
        assert _route(api, key) == {"echo": upstream}

        # A reconcile after the failure (queued by a TTL change, which it writes to the
        # namespace): a failed sandbox of the old kind would have had its namespace deleted.
        extended = api.patch(f"/v1/sandboxes/{name}", json={"ttl": "5h"}).json()["expiresAt"]
        poll.until(
            lambda: k8s.get(f"/api/v1/namespaces/{ns}").json()["metadata"]["annotations"],
            lambda notes: notes["sandboxd.dev/expires-at"] == extended[:19] + "Z",
            timeout=30, what="the namespace's expiry to follow", context=server.log,
        )  # fmt: skip
        still = api.get(f"/v1/sandboxes/{name}").json()
        assert (still["phase"], still["reason"]) == ("Failed", "UpdateFailed")
        namespace = k8s.get(f"/api/v1/namespaces/{ns}").json()
        deployment = k8s.get(f"/apis/apps/v1/namespaces/{ns}/deployments/echo").json()
        assert "deletionTimestamp" not in namespace["metadata"]
        assert "deletionTimestamp" not in deployment["metadata"]
        assert deployment["spec"]["replicas"] == 1
        assert deployment["status"]["availableReplicas"] == 1
        pods = _selected_pods(k8s, ns)
        assert old in pods and _ready(pods[old]) and _image(pods[old]) == "acme/echo:1"
        assert [_image(p) for n, p in pods.items() if n != old] == [f"acme/echo:{broken}"]
        assert not any(_ready(p) for n, p in pods.items() if n != old)

        _put(api, name, "acme/echo:2")  # fixed
        fixed = _until_phase(server, api, name, {"Ready", "Failed"})
        assert fixed["phase"] == "Ready", fixed
        assert fixed["forks"][0]["upstream"] == upstream
        remaining = poll.until(
            lambda: _selected_pods(k8s, ns), lambda p: len(p) == 1, timeout=30,
            what="only the fixed pod to be left",
        )  # fmt: skip
        (pod,) = remaining.values()
        assert _image(pod) == "acme/echo:2" and _ready(pod)
        events = [e["reason"] for e in api.get(f"/v1/sandboxes/{name}/events").json()["items"]]
        assert "UpdateFailed" in events
        _delete(server, api, k8s, name)
