"""The reconciler's retry model against the real apiserver: a rendered object the apiserver
refuses fails the sandbox once, with the apiserver's reason, and is not applied again; an
apiserver that cannot be reached is retried with a growing backoff, and the sandbox becomes
Ready once it is back."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.support import poll
from tests.support.kube import KubeControlPlane
from tests.support.kube_objects import apply, baseline_workload
from tests.support.server import Sandboxd, running_sandboxd
from tests.support.tcpgate import TcpGate

BASELINE_NS = "retry-shop"
POLICY = "sandboxd-test-no-forbidden-images"
CATALOG = f"""
services:
  - name: echo
    baseline: {{url: "http://echo.{BASELINE_NS}.svc.cluster.local:80"}}
    kubernetes: {{namespace: {BASELINE_NS}, deployment: echo, service: echo, port: 80}}
"""
# Passes sandboxd's own validation (a well-formed image reference); the cluster's policy says no.
FORBIDDEN_IMAGE = "acme/forbidden:1.0"
ADMISSION = "/apis/admissionregistration.k8s.io/v1"


@pytest.fixture(scope="module")
def baseline(kube: KubeControlPlane) -> Iterator[None]:
    with kube.client() as client:
        client.post("/api/v1/namespaces", json={"metadata": {"name": BASELINE_NS}})
        for obj in baseline_workload(
            "echo", BASELINE_NS, image="acme/echo:1.0", mode="v1", requests={"cpu": "100m"}
        ):
            apply(client, obj)
        yield
        client.delete(f"/api/v1/namespaces/{BASELINE_NS}")


@pytest.fixture
def policy(kube: KubeControlPlane, baseline: None) -> Iterator[None]:
    """A ValidatingAdmissionPolicy that refuses Deployments running FORBIDDEN_IMAGE (with
    reason Invalid: a 422), in force once a dry-run create is refused."""
    with kube.client() as client:
        client.post(f"{ADMISSION}/validatingadmissionpolicies", json=_policy()).raise_for_status()
        client.post(f"{ADMISSION}/validatingadmissionpolicybindings", json=_binding())
        probe = next(o for o in _workload("probe", FORBIDDEN_IMAGE) if o["kind"] == "Deployment")
        path = f"/apis/apps/v1/namespaces/{BASELINE_NS}/deployments"
        poll.until(
            lambda: client.post(path, params={"dryRun": "All"}, json=probe).status_code == 422,
            timeout=60,
            what="the admission policy in force",
        )
        try:
            yield
        finally:
            client.delete(f"{ADMISSION}/validatingadmissionpolicybindings/{POLICY}")
            client.delete(f"{ADMISSION}/validatingadmissionpolicies/{POLICY}")


def test_a_rendered_object_the_apiserver_refuses_fails_the_sandbox_once(
    tmp_path: Path, kube: KubeControlPlane, policy: None
) -> None:
    name = f"pr-{uuid.uuid4().hex[:8]}"
    spec = {"name": name, "forks": [{"service": "echo", "image": FORBIDDEN_IMAGE}]}
    with _sandboxd(tmp_path, kube.kubeconfig) as server, server.client() as api:
        refused = _refusals(kube)
        assert api.post("/v1/sandboxes", json=spec).status_code == 201
        failed = _wait_phase(server, name, {"Failed", "Ready"})
        assert failed["phase"] == "Failed", failed
        assert failed["reason"] == "KubeInvalid"
        assert "images from acme/forbidden are not allowed" in failed["message"]
        events = api.get(f"/v1/sandboxes/{name}/events").json()["items"]
        warnings = [(e["reason"], e["message"]) for e in events if e["type"] == "Warning"]
        assert warnings == [("KubeInvalid", failed["message"])]
        assert _refusals(kube) == refused + 1
        with kube.client() as k8s:  # its forks are stopped, as for any failed sandbox
            poll.until(
                lambda: k8s.get(f"/api/v1/namespaces/sbx-{name}").status_code == 404,
                timeout=90,
                what="the failed sandbox's namespace gone",
            )

        done = _reconciles(server).get("done", 0)
        assert api.patch(f"/v1/sandboxes/{name}", json={"labels": {"poked": "1"}}).is_success
        poll.until(  # it ran again, as Failed
            lambda: _reconciles(server).get("done", 0) > done, timeout=60, what="a reconcile"
        )
        assert _refusals(kube) == refused + 1  # ... and applied nothing
        assert api.get(f"/v1/sandboxes/{name}").json()["phase"] == "Failed"
        counts = _reconciles(server)
        assert counts.get("retry", 0) == counts.get("error", 0) == 0, counts
        assert "Traceback" not in server.log()


def test_an_unreachable_apiserver_is_retried_with_backoff_until_it_is_back(
    tmp_path: Path, kube: KubeControlPlane, baseline: None
) -> None:
    name = f"pr-{uuid.uuid4().hex[:8]}"
    base, cap = 0.1, 0.8
    with TcpGate("127.0.0.1", kube.port) as gate:
        kubeconfig = _kubeconfig_via(kube, gate.port, tmp_path / "gated.kubeconfig")
        backoff = {"SANDBOXD_RETRY_BASE": str(base), "SANDBOXD_RETRY_CAP": str(cap)}
        with (
            _sandboxd(tmp_path, kubeconfig, env=backoff) as server,
            server.client() as api,
        ):
            gate.shut()
            assert api.post("/v1/sandboxes", json={"name": name}).status_code == 201
            poll.until(
                lambda: _reconciles(server).get("retry", 0) >= 6,
                timeout=60,
                what="six retries",
                context=server.log,
            )
            waiting = api.get(f"/v1/sandboxes/{name}").json()
            assert waiting["phase"] == "Pending", waiting  # not failed: the API may come back
            gate.open()
            ready = _wait_phase(server, name, {"Ready", "Failed"})
            assert ready["phase"] == "Ready", ready
            api.delete(f"/v1/sandboxes/{name}")
            _wait_phase(server, name, {"Deleted"})
            log = server.log()
    waits = [float(w) for w in re.findall(rf"reconcile {name}: .*; retrying in ([\d.]+)s", log)]
    assert waits[:6] == [0.1, 0.2, 0.4, 0.8, 0.8, 0.8], log
    assert "Unreachable" in log and "Traceback" not in log


def _sandboxd(
    tmp_path: Path, kubeconfig: Path, *, env: dict[str, str] | None = None
) -> AbstractContextManager[Sandboxd]:
    catalog = tmp_path / "sandboxd.yaml"
    catalog.write_text(CATALOG)
    return running_sandboxd(
        tmp_path / "data",
        catalog=catalog,
        args=["--runtime", "kubernetes", "--kubeconfig", str(kubeconfig)],
        env={"SANDBOXD_HEALTH_TIMEOUT": "120", **(env or {})},
    )


def _kubeconfig_via(kube: KubeControlPlane, port: int, path: Path) -> Path:
    """The admin kubeconfig, pointed at `port` on loopback (the serving certificate names the
    address, not the port)."""
    config = json.loads(kube.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(json.dumps(config))
    return path


def _refusals(kube: KubeControlPlane) -> float:
    """Requests the policy has refused so far, by the apiserver's own count."""
    with kube.client() as client:
        text = client.get("/metrics").text
    pattern = r"^apiserver_validating_admission_policy_check_total\{(.*)\} (\S+)$"
    return sum(
        float(value)
        for labels, value in re.findall(pattern, text, re.MULTILINE)
        if f'policy="{POLICY}"' in labels and 'enforcement_action="deny"' in labels
    )


def _reconciles(server: Sandboxd) -> dict[str, float]:
    with server.client() as api:
        text = api.get("/metrics").text
    pattern = r'^sandboxd_reconcile_total\{result="(\w+)"\} (\S+)$'
    return {result: float(value) for result, value in re.findall(pattern, text, re.MULTILINE)}


def _wait_phase(server: Sandboxd, name: str, phases: set[str]) -> dict[str, Any]:
    with server.client() as api:
        body = poll.until(
            lambda: api.get(f"/v1/sandboxes/{name}").json(),
            lambda body: body.get("phase") in phases,
            timeout=90,
            what=f"{name} to reach {phases}",
            context=server.log,
        )
    return dict(body)


def _policy() -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["deployments"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "object.spec.template.spec.containers.all(c, "
                    "!c.image.startsWith('acme/forbidden'))",
                    "message": "images from acme/forbidden are not allowed here",
                    "reason": "Invalid",
                }
            ],
        },
    }


def _binding() -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY},
        "spec": {"policyName": POLICY, "validationActions": ["Deny"]},
    }


def _workload(name: str, image: str) -> list[dict[str, Any]]:
    return baseline_workload(name, BASELINE_NS, image=image, mode="v1", requests={"cpu": "100m"})
