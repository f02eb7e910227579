"""`sandboxd serve --runtime kubernetes` against the real apiserver: a sandbox is a namespace with
its quota, limits, policies and forks; Ready when the Deployments are available (scheduled by
kube-scheduler onto kwok's fake nodes, which report the pods Running); gone when deleted,
expired, failed or orphaned; converges after a SIGKILL."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import poll
from tests.support.kube import KubeControlPlane
from tests.support.kube_objects import apply, baseline_workload
from tests.support.server import Sandboxd, running_sandboxd

BASELINE_NS = "shop"
MANAGED = "app.kubernetes.io/managed-by=sandboxd"


def _baseline_objects(name: str, *, cpu: str, catalogued: bool) -> list[dict[str, Any]]:
    return baseline_workload(
        name,
        BASELINE_NS,
        image=f"acme/{name}:1.0",
        mode="v1",
        requests={"cpu": cpu, "memory": "64Mi"},
        service_labels={"sandboxd.dev/service": name} if catalogued else {},
        service_annotations={"sandboxd.dev/protocol": "mcp"},
    )


@pytest.fixture(scope="module")
def baseline(kube: KubeControlPlane) -> Iterator[None]:
    with kube.client() as client:
        client.post(
            "/api/v1/namespaces", json={"metadata": {"name": BASELINE_NS}}
        ).raise_for_status()
        for obj in [
            *_baseline_objects("echo", cpu="100m", catalogued=True),
            *_baseline_objects("hog", cpu="6", catalogued=False),  # more than a sandbox's quota
        ]:
            apply(client, obj)
        yield
        client.delete(f"/api/v1/namespaces/{BASELINE_NS}")


CATALOG = f"""
services:
  - name: echo
    protocol: mcp
    baseline: {{url: "http://echo.{BASELINE_NS}.svc.cluster.local:80"}}
    kubernetes: {{namespace: {BASELINE_NS}, deployment: echo, service: echo, port: 80}}
  - name: hog
    baseline: {{url: "http://hog.{BASELINE_NS}.svc.cluster.local:80"}}
    kubernetes: {{namespace: {BASELINE_NS}, deployment: hog, service: hog, port: 80}}
  - name: ghost
    baseline: {{url: "http://ghost.{BASELINE_NS}.svc.cluster.local:80"}}
    kubernetes: {{namespace: {BASELINE_NS}, deployment: ghost, service: ghost, port: 80}}
"""


def _sandboxd(
    tmp_path: Path,
    kube: KubeControlPlane,
    *args: str,
    catalog: bool = True,
    health_timeout: int = 120,
) -> AbstractContextManager[Sandboxd]:
    path = tmp_path / "sandboxd.yaml"
    path.write_text(CATALOG)
    return running_sandboxd(
        tmp_path / "data",
        catalog=path if catalog else None,
        args=["--runtime", "kubernetes", "--kubeconfig", str(kube.kubeconfig), *args],
        env={"SANDBOXD_HEALTH_TIMEOUT": str(health_timeout)},
    )


def _name() -> str:
    return f"pr-{uuid.uuid4().hex[:8]}"


def _wait_phase(
    server: Sandboxd, name: str, phases: set[str], timeout: float = 90
) -> dict[str, Any]:
    with server.client() as api:
        body = poll.until(
            lambda: api.get(f"/v1/sandboxes/{name}").json(),
            lambda body: body.get("phase") in phases,
            timeout=timeout,
            what=f"{name} to reach {phases}",
            context=server.log,
        )
    return dict(body)


def _gone(client: httpx.Client, path: str, timeout: float = 90) -> None:
    poll.until(lambda: client.get(path).status_code == 404, timeout=timeout, what=f"{path} gone")


def test_up_makes_the_namespace_and_fork_as_specified_and_down_removes_them(
    tmp_path: Path, kube: KubeControlPlane, baseline: None
) -> None:
    name = _name()
    ns = f"sbx-{name}"
    spec = {
        "name": name,
        "ttl": "2h",
        "agent": {"promptVersion": "p-7", "modelVersion": "claude/x 1"},
        "forks": [{"service": "echo", "image": "acme/echo:2.0", "env": {"MODE": "v2"}}],
    }
    with _sandboxd(tmp_path, kube) as server, kube.client() as k8s:
        with server.client() as api:
            created = api.post("/v1/sandboxes", json=spec)
            assert created.status_code == 201, created.text
        ready = _wait_phase(server, name, {"Ready", "Failed"})
        assert ready["phase"] == "Ready", ready

        namespace = k8s.get(f"/api/v1/namespaces/{ns}").json()["metadata"]
        assert namespace["labels"]["app.kubernetes.io/managed-by"] == "sandboxd"
        assert namespace["labels"]["sandboxd.dev/sandbox"] == name
        assert namespace["annotations"]["sandboxd.dev/expires-at"] == ready["expiresAt"][:19] + "Z"
        quota = k8s.get(f"/api/v1/namespaces/{ns}/resourcequotas/sandboxd").json()["spec"]
        assert quota["hard"] == {
            "limits.cpu": "4", "limits.memory": "8Gi", "requests.cpu": "4",
            "requests.memory": "8Gi", "pods": "20",
        }  # fmt: skip
        assert k8s.get(f"/api/v1/namespaces/{ns}/limitranges/sandboxd").status_code == 200
        policies = k8s.get(f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies").json()
        by_name = {p["metadata"]["name"]: p["spec"] for p in policies["items"]}
        sources = by_name["sandboxd-ingress"]["ingress"][0]["from"]
        allowed = {
            s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in sources
        }
        assert allowed == {"sandboxd", ns}
        egress = by_name["sandboxd-egress"]["egress"][1]["to"]
        reach = {
            s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in egress
        }
        assert reach == {"sandboxd", ns, BASELINE_NS}

        deployment = k8s.get(f"/apis/apps/v1/namespaces/{ns}/deployments/echo").json()
        assert deployment["status"]["availableReplicas"] == 1
        pod = deployment["spec"]["template"]
        container = pod["spec"]["containers"][0]
        assert container["image"] == "acme/echo:2.0"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MODE"] == "v2" and env["SANDBOXD_SANDBOX"] == name
        assert env["SANDBOXD_ROUTING_KEY"] == ready["routingKey"]
        assert pod["metadata"]["labels"]["sandboxd.dev/prompt-version"] == "p-7"
        assert pod["metadata"]["labels"]["sandboxd.dev/model-version"] == "claude-x-1"
        assert pod["metadata"]["labels"]["sandboxd.dev/service"] == "echo"
        managers = {m["manager"] for m in deployment["metadata"]["managedFields"]}
        assert "sandboxd" in managers
        service = k8s.get(f"/api/v1/namespaces/{ns}/services/echo").json()["spec"]
        assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(80, 8080)]
        upstream = f"http://echo.{ns}.svc.cluster.local:80"
        assert ready["forks"][0]["upstream"] == upstream
        with server.client() as api:
            routes = api.get("/v1/routes").json()
            assert upstream in str(routes)
            events = [e["reason"] for e in api.get(f"/v1/sandboxes/{name}/events").json()["items"]]
            assert "ForkReady" in events

            extended = api.patch(f"/v1/sandboxes/{name}", json={"ttl": "5h"}).json()["expiresAt"]
            assert extended != ready["expiresAt"]
            poll.until(  # the annotation follows
                lambda: _expires(k8s, ns),
                lambda expires: expires == extended[:19] + "Z",
                timeout=20,
                what=f"the namespace's expiry to follow to {extended}",
            )

            assert api.delete(f"/v1/sandboxes/{name}").status_code in (200, 202)
        _wait_phase(server, name, {"Deleted"})
        assert k8s.get(f"/api/v1/namespaces/{ns}").status_code == 404  # finalized, not Terminating


def test_istio_routes_follow_the_sandboxes(
    tmp_path: Path, kube: KubeControlPlane, baseline: None
) -> None:
    """One VirtualService per baseline Service (Istio does not merge several for sidecars):
    a rule per sandbox, the baseline last; each sandbox's rule leaves with it."""
    first, second = _name(), _name()
    vs_path = f"/apis/networking.istio.io/v1/namespaces/{BASELINE_NS}/virtualservices/sandboxd-echo"
    with _sandboxd(tmp_path, kube, "--istio") as server, kube.client() as k8s:
        with server.client() as api:
            for name in (first, second):
                spec = {"name": name, "forks": [{"service": "echo", "image": "acme/echo:3.0"}]}
                assert api.post("/v1/sandboxes", json=spec).status_code == 201
        keys = {}
        for name in (first, second):
            ready = _wait_phase(server, name, {"Ready", "Failed"})
            assert ready["phase"] == "Ready", ready
            keys[name] = ready["routingKey"]
        vs = k8s.get(vs_path).json()
        assert vs["spec"]["hosts"] == [f"echo.{BASELINE_NS}.svc.cluster.local"]
        rules = vs["spec"]["http"]
        expected = sorted([f"sandbox-{first}", f"sandbox-{second}"])
        assert [r["name"] for r in rules] == [*expected, "baseline"]
        assert (
            rules[-1]["route"][0]["destination"]["host"] == f"echo.{BASELINE_NS}.svc.cluster.local"
        )
        for rule in rules[:-1]:
            name = rule["name"].removeprefix("sandbox-")
            regex = rule["match"][0]["headers"]["baggage"]["regex"]
            assert re.fullmatch(regex, f"userid=7, sandbox={keys[name]};p=1")
            assert not re.fullmatch(regex, f"sandbox={keys[name]}0")
            assert rule["route"][0]["destination"] == {
                "host": f"echo.sbx-{name}.svc.cluster.local",
                "port": {"number": 80},
            }
        with server.client() as api:
            api.delete(f"/v1/sandboxes/{first}")
            _wait_phase(server, first, {"Deleted"})
            names = [r["name"] for r in k8s.get(vs_path).json()["spec"]["http"]]
            assert names == [f"sandbox-{second}", "baseline"]
            api.delete(f"/v1/sandboxes/{second}")
            _wait_phase(server, second, {"Deleted"})
        assert k8s.get(vs_path).status_code == 404
        for name in (first, second):
            assert k8s.get(f"/api/v1/namespaces/sbx-{name}").status_code == 404


def test_ttl_expiry_deletes_the_namespace(
    tmp_path: Path, kube: KubeControlPlane, baseline: None
) -> None:
    name = _name()
    spec = {"name": name, "ttl": "4s", "forks": [{"service": "echo"}]}
    with _sandboxd(tmp_path, kube) as server, kube.client() as k8s:
        with server.client() as api:
            assert api.post("/v1/sandboxes", json=spec).status_code == 201
        _wait_phase(server, name, {"Ready"})
        assert k8s.get(f"/api/v1/namespaces/sbx-{name}").status_code == 200
        deleted = _wait_phase(server, name, {"Deleted"}, timeout=4 + 1 + 90)
        assert deleted["reason"] == "Expired"
        assert k8s.get(f"/api/v1/namespaces/sbx-{name}").status_code == 404
        with server.client() as api:
            events = [e["reason"] for e in api.get(f"/v1/sandboxes/{name}/events").json()["items"]]
        assert "Expired" in events and "Deleted" in events


def test_a_missing_baseline_fails_with_a_reason_and_leaves_no_namespace(
    tmp_path: Path, kube: KubeControlPlane, baseline: None
) -> None:
    name = _name()
    with _sandboxd(tmp_path, kube) as server, kube.client() as k8s:
        with server.client() as api:
            bad_image = api.post(
                "/v1/sandboxes",
                json={"name": name, "forks": [{"service": "echo", "image": "Not A/Image::x"}]},
            )
            assert bad_image.status_code == 422
            assert bad_image.json()["error"] == "invalid_request"
            assert "is not an image reference" in bad_image.json()["message"]
            assert api.get(f"/v1/sandboxes/{name}").status_code == 404
            no_ref = api.post("/v1/sandboxes", json={"name": name, "forks": [{"service": "nope"}]})
            assert no_ref.status_code == 422
            assert no_ref.json()["error"] == "unknown_service"
            created = api.post(
                "/v1/sandboxes", json={"name": name, "forks": [{"service": "ghost"}]}
            )
            assert created.status_code == 201
        failed = _wait_phase(server, name, {"Failed", "Ready"})
        assert failed["phase"] == "Failed"
        assert failed["reason"] == "BaselineNotFound"
        assert f"{BASELINE_NS}/ghost" in failed["message"]
        _gone(k8s, f"/api/v1/namespaces/sbx-{name}")
    assert not [
        ns for ns in _managed(kube) if ns["metadata"]["labels"]["sandboxd.dev/sandbox"] == name
    ]


def test_sigkill_mid_provision_converges_after_restart(
    tmp_path: Path, kube: KubeControlPlane, baseline: None
) -> None:
    name = _name()
    spec = {"name": name, "forks": [{"service": "echo", "image": "acme/echo:4.0"}]}
    with _sandboxd(tmp_path, kube) as server, kube.client() as k8s:
        with server.client() as api:
            assert api.post("/v1/sandboxes", json=spec).status_code == 201
        poll.until(
            lambda: k8s.get(f"/api/v1/namespaces/sbx-{name}").status_code == 200,
            timeout=30,
            what=f"namespace sbx-{name}",
            context=server.log,
        )
        server.kill()  # mid-provision: the namespace is there, the sandbox is not Ready
        server.start()
        ready = _wait_phase(server, name, {"Ready", "Failed"})
        assert ready["phase"] == "Ready", ready
    with kube.client() as k8s:
        deployments = k8s.get(f"/apis/apps/v1/namespaces/sbx-{name}/deployments").json()["items"]
        assert [d["metadata"]["name"] for d in deployments] == ["echo"]
        assert (
            deployments[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "acme/echo:4.0"
        )
        k8s.delete(f"/api/v1/namespaces/sbx-{name}")


def test_orphaned_namespaces_are_collected_and_told(
    tmp_path: Path, kube: KubeControlPlane, baseline: None
) -> None:
    name = _name()
    with _sandboxd(tmp_path, kube) as server, kube.client() as k8s, server.client() as api:
        assert api.post("/v1/sandboxes", json={"name": name}).status_code == 201
        _wait_phase(server, name, {"Ready"})
        api.delete(f"/v1/sandboxes/{name}")
        _wait_phase(server, name, {"Deleted"})
        # a namespace that claims a deleted sandbox, and one that claims none that ever was
        stray = f"x{uuid.uuid4().hex[:6]}"
        for sandbox in (name, stray):
            labels = {"app.kubernetes.io/managed-by": "sandboxd", "sandboxd.dev/sandbox": sandbox}
            k8s.post(
                "/api/v1/namespaces",
                json={"metadata": {"name": f"sbx-{sandbox}", "labels": labels}},
            ).raise_for_status()
        _gone(k8s, f"/api/v1/namespaces/sbx-{name}")
        _gone(k8s, f"/api/v1/namespaces/sbx-{stray}")
        events = api.get(f"/v1/sandboxes/{name}/events").json()["items"]
        assert "OrphanRemoved" in [e["reason"] for e in events]


def test_the_catalog_can_come_from_the_cluster(
    tmp_path: Path, kube: KubeControlPlane, baseline: None
) -> None:
    """Baseline Services labelled `sandboxd.dev/service`; a fork's own Service (it carries the
    label too, with the sandbox's) is not a baseline."""
    fork_ns = f"sbx-{_name()}"
    fork = {"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": "echo", "namespace": fork_ns,
        "labels": {"sandboxd.dev/service": "echo", "sandboxd.dev/sandbox": "x"}},
        "spec": {"ports": [{"port": 80}]}}  # fmt: skip
    with kube.client() as k8s:
        k8s.post("/api/v1/namespaces", json={"metadata": {"name": fork_ns}}).raise_for_status()
        apply(k8s, fork)
        try:
            with (
                _sandboxd(tmp_path, kube, "--catalog-from-cluster", catalog=False) as server,
                server.client() as api,
            ):
                services = api.get("/v1/services").json()["items"]
        finally:
            k8s.delete(f"/api/v1/namespaces/{fork_ns}")
    assert [s["name"] for s in services] == ["echo"]
    assert services[0]["protocol"] == "mcp"
    assert services[0]["baseline"]["url"] == f"http://echo.{BASELINE_NS}.svc.cluster.local:80"


def test_a_ready_fork_that_rolls_out_again_is_not_timed_out(
    tmp_path: Path, kube: KubeControlPlane, baseline: None
) -> None:
    """Start-up is timed by the Deployment's progress deadline (the health timeout), which
    restarts with every rollout: a rollout long after creation is not a failed start."""
    name = _name()
    ns = f"sbx-{name}"
    with _sandboxd(tmp_path, kube, health_timeout=4) as server, kube.client() as k8s:
        with server.client() as api:
            assert (
                api.post(
                    "/v1/sandboxes", json={"name": name, "forks": [{"service": "echo"}]}
                ).status_code
                == 201
            )
        assert _wait_phase(server, name, {"Ready", "Failed"})["phase"] == "Ready"
        path = f"/apis/apps/v1/namespaces/{ns}/deployments/echo"
        assert k8s.get(path).json()["spec"]["progressDeadlineSeconds"] == 4
        time.sleep(5)  # longer than the health timeout since the Deployment was created
        restart = {"spec": {"template": {"metadata": {"annotations": {"restartedAt": "now"}}}}}
        patched = k8s.patch(
            path, json=restart, headers={"Content-Type": "application/strategic-merge-patch+json"}
        )
        assert patched.status_code == 200, patched.text

        def rollout() -> dict[str, Any]:
            deployment = k8s.get(path).json()
            return {"generation": deployment["metadata"]["generation"], **deployment["status"]}

        poll.until(
            rollout,
            lambda status: (
                status.get("observedGeneration") == status["generation"]
                and status.get("updatedReplicas") == status.get("availableReplicas") == 1
            ),
            timeout=30,
            what="the rollout to finish",
        )
        # Instead of waiting for a failure that should not come: a reconcile queued after the
        # rollout (by a TTL change) applies and records its verdict, after every reconcile that
        # could have seen the rollout in progress (one name is reconciled by one worker at once).
        with server.client() as api:
            extended = api.patch(f"/v1/sandboxes/{name}", json={"ttl": "5h"}).json()["expiresAt"]

            def verdict() -> tuple[str, str | None]:
                phase = api.get(f"/v1/sandboxes/{name}").json()["phase"]
                meta = k8s.get(f"/api/v1/namespaces/{ns}").json()["metadata"]
                return phase, (meta.get("annotations") or {}).get("sandboxd.dev/expires-at")

            poll.until(
                verdict,
                lambda seen: seen[0] == "Failed" or seen == ("Ready", extended[:19] + "Z"),
                timeout=20,
                what="a verdict after the rollout and the TTL change",
            )
        with server.client() as api:
            body = api.get(f"/v1/sandboxes/{name}").json()
            reasons = [e["reason"] for e in api.get(f"/v1/sandboxes/{name}/events").json()["items"]]
            api.delete(f"/v1/sandboxes/{name}")
        assert body["phase"] == "Ready", body
        assert "HealthCheckTimeout" not in reasons and "Failed" not in reasons


def test_fifty_concurrent_sandboxes_become_ready_and_leave_nothing_behind(
    tmp_path: Path, kube: KubeControlPlane, baseline: None
) -> None:
    names = [f"many-{i:02d}-{uuid.uuid4().hex[:4]}" for i in range(50)]
    with _sandboxd(tmp_path, kube) as server:

        def create(name: str) -> int:
            with server.client() as api:
                spec = {"name": name, "forks": [{"service": "echo", "env": {"N": name}}]}
                return api.post("/v1/sandboxes", json=spec).status_code

        with ThreadPoolExecutor(16) as pool:
            assert set(pool.map(create, names)) == {201}
        for name in names:
            assert _wait_phase(server, name, {"Ready", "Failed"}, timeout=180)["phase"] == "Ready"

        def delete(name: str) -> int:
            with server.client() as api:
                return api.delete(f"/v1/sandboxes/{name}").status_code

        with ThreadPoolExecutor(16) as pool:
            assert set(pool.map(delete, names)) <= {200, 202}
        for name in names:
            _wait_phase(server, name, {"Deleted"}, timeout=180)
    left = [ns["metadata"]["name"] for ns in _managed(kube)]
    assert not [n for n in left if n.startswith("sbx-many-")], left


def _expires(k8s: httpx.Client, namespace: str) -> str:
    meta = k8s.get(f"/api/v1/namespaces/{namespace}").json()["metadata"]
    return str(meta["annotations"]["sandboxd.dev/expires-at"])


def test_a_fork_the_quota_refuses_fails_with_the_reason(
    tmp_path: Path, kube: KubeControlPlane, baseline: None
) -> None:
    """The baseline asks for 6 CPUs, the sandbox's quota allows 4: the ReplicaSet controller's
    retries keep failing, so after the grace period the sandbox fails and its namespace goes."""
    name = _name()
    with _sandboxd(tmp_path, kube) as server, kube.client() as k8s:
        with server.client() as api:
            spec = {"name": name, "forks": [{"service": "hog"}]}
            assert api.post("/v1/sandboxes", json=spec).status_code == 201
        failed = _wait_phase(server, name, {"Failed", "Ready"}, timeout=120)
        assert failed["phase"] == "Failed"
        assert failed["reason"] == "ReplicaFailure"
        assert "exceeded quota" in failed["message"]
        _gone(k8s, f"/api/v1/namespaces/sbx-{name}")


def _managed(kube: KubeControlPlane) -> list[dict[str, Any]]:
    with kube.client() as k8s:
        items = k8s.get("/api/v1/namespaces", params={"labelSelector": MANAGED}).json()["items"]
    return list(items)


def test_the_sandbox_cli_drives_the_kubernetes_runtime(
    tmp_path: Path, kube: KubeControlPlane, baseline: None
) -> None:
    """`sandbox up -f` waits for Ready, `sandbox logs` points at kubectl, `sandbox down --wait`
    returns once the namespace is finalized."""
    name = _name()
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: {name}\nforks:\n  - service: echo\n    image: registry.example.com/echo:pr-7\n"
    )
    with _sandboxd(tmp_path, kube) as server, kube.client() as k8s:
        env = {
            "PATH": os.environ["PATH"],
            "SANDBOXD_URL": server.url,
            "SANDBOXD_TOKEN": server.token,
        }

        def sandbox(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(Path(sys.executable).with_name("sandbox")), *args],
                env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip

        up = sandbox("up", "-f", str(spec), "-o", "json")
        assert up.returncode == 0, up.stderr
        assert json.loads(up.stdout)["phase"] == "Ready"
        deployment = k8s.get(f"/apis/apps/v1/namespaces/sbx-{name}/deployments/echo").json()
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == "registry.example.com/echo:pr-7"
        logs = sandbox("logs", name, "echo")
        assert logs.returncode != 0
        assert f"kubectl logs -n sbx-{name} deployment/echo" in logs.stderr
        down = sandbox("down", name, "--wait")
        assert down.returncode == 0, down.stderr
        assert k8s.get(f"/api/v1/namespaces/sbx-{name}").status_code == 404
