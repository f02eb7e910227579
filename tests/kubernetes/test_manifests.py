"""manifests/ on a real apiserver: installed with kubectl as its README says, the objects as
specified, RBAC that grants sandboxd exactly what the kubernetes runtime does (and the router
nothing), and admission policies that hold when sandboxd's ServiceAccount itself — authenticated
by a client certificate, with its two groups — writes outside the namespaces it owns."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
from typer.main import get_command

from sandboxd.__main__ import cli
from sandboxd.core.catalog import parse_catalog
from sandboxd.core.spec import ForkSpec
from sandboxd.runtime.kubernetes import render
from sandboxd.settings import Settings
from sandboxd_router.__main__ import parse_args
from tests.support import poll
from tests.support.kube import KubeControlPlane
from tests.support.manifests import (
    MANAGED_BY,
    MANIFESTS,
    ROUTER,
    SANDBOXD,
    Obj,
    apply,
    denied_by,
    deployment,
    kubectl,
    may,
    namespace,
    path_of,
    rendered,
    service,
    virtual_service,
)
from tests.support.server import running_sandboxd

DEPLOYMENTS = "/apis/apps/v1/namespaces/sandboxd/deployments"
MERGE = {"Content-Type": "application/merge-patch+json"}
READ, WRITE = ("get", "list", "watch"), ("create", "patch", "update", "delete")
# What the runtime does: (group, resource, namespace or "" for cluster-wide, verbs).
NEEDED = [
    ("", "namespaces", "", READ + WRITE),
    ("apps", "deployments", "", READ),
    ("", "services", "", READ),
    ("apps", "deployments", "sbx-pr-1", WRITE),
    ("", "services", "sbx-pr-1", WRITE),
    ("", "resourcequotas", "sbx-pr-1", READ + WRITE),
    ("", "limitranges", "sbx-pr-1", READ + WRITE),
    ("networking.k8s.io", "networkpolicies", "sbx-pr-1", READ + WRITE),
    ("networking.istio.io", "virtualservices", "baseline", READ + WRITE),
]
# (verb, group, resource, subresource, namespace)
FORBIDDEN = [
    ("get", "", "secrets", "", "baseline"),
    ("list", "", "secrets", "", "baseline"),
    ("list", "", "secrets", "", ""),
    ("get", "", "secrets", "", "sandboxd"),
    ("get", "", "configmaps", "", "baseline"),
    ("list", "", "configmaps", "", ""),
    ("create", "", "pods", "exec", "sbx-pr-1"),
    ("get", "", "pods", "log", "sbx-pr-1"),
    ("create", "", "pods", "", "sbx-pr-1"),
    ("create", "", "serviceaccounts", "token", "sbx-pr-1"),
    ("create", "rbac.authorization.k8s.io", "rolebindings", "", "sbx-pr-1"),
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings", "", ""),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", "", ""),
    ("impersonate", "", "serviceaccounts", "", "kube-system"),
    ("delete", "admissionregistration.k8s.io", "validatingadmissionpolicybindings", "", ""),
    ("deletecollection", "", "namespaces", "", ""),
    ("update", "apps", "deployments", "scale", "baseline"),
    ("update", "", "namespaces", "finalize", ""),
]
INSTALL = [  # manifests/README.md, with throwaway Secret values
    ("create", "namespace", "sandboxd"),
    ("-n", "sandboxd", "create", "secret", "generic", "sandboxd-database",
     "--from-literal=url=postgresql+psycopg://sandboxd:test@postgres:5432/sandboxd"),
    ("-n", "sandboxd", "create", "secret", "generic", "sandboxd-admin",
     "--from-literal=token=test-admin-token", f"--from-literal=view-key={'v' * 64}"),
]  # fmt: skip


@pytest.fixture(scope="module")
def deployed(kube: KubeControlPlane) -> Iterator[str]:
    """Installed as the README says — namespace and Secrets, a server-side dry run that creates
    nothing, the apply — with every admission policy in force. Yields the apply's stderr;
    afterwards `kubectl delete -k` removes it all, so the rest of the session sees no trace."""
    try:
        for step in INSTALL:
            done = kubectl(kube, *step)
            assert done.returncode == 0, done.stderr
        dry = kubectl(kube, "apply", "-k", str(MANIFESTS), "--server-side", "--dry-run=server")
        assert dry.returncode == 0, dry.stderr
        lines = dry.stdout.strip().splitlines()
        assert len(lines) == len(rendered(kube))
        assert all(line.endswith("serverside-applied (server dry run)") for line in lines)
        with kube.client() as admin:
            assert admin.get("/apis/rbac.authorization.k8s.io/v1/clusterroles/sandboxd").is_error
        applied = kubectl(kube, "apply", "-k", str(MANIFESTS), "--server-side")
        assert applied.returncode == 0, applied.stderr
        until_enforced(kube)
        yield applied.stderr
    finally:
        removed = kubectl(
            kube, "delete", "-k", str(MANIFESTS), "--ignore-not-found", "--timeout=2m"
        )
        assert removed.returncode == 0, removed.stderr


def until_enforced(kube: KubeControlPlane) -> None:
    """A policy binds a moment after it is stored: wait until each refuses a dry run it must."""
    probes = {
        "sandboxd-namespaces": namespace("mf-probe"),
        "sandboxd-sandbox-objects": service("probe", "default"),
        "sandboxd-virtualservices": virtual_service("probe", "default"),
    }
    with kube.client(SANDBOXD) as sa:
        for policy, obj in probes.items():
            poll.until(partial(refuses, sa, policy, obj), timeout=30, what=policy)


def refuses(sa: httpx.Client, policy: str, obj: Obj) -> bool:
    return denied_by(apply(sa, path_of(obj), obj, dry_run=True), policy)


@pytest.fixture
def admin(kube: KubeControlPlane, deployed: str) -> Iterator[httpx.Client]:
    with kube.client() as client:
        yield client


@pytest.fixture
def sa(kube: KubeControlPlane, deployed: str) -> Iterator[httpx.Client]:
    """sandboxd's ServiceAccount, as the apiserver authenticates it."""
    with kube.client(SANDBOXD) as client:
        yield client


@pytest.fixture
def baseline(admin: httpx.Client) -> Iterator[str]:
    """A namespace sandboxd does not own, holding a baseline Deployment and Service `web`."""
    ns = f"mf-base-{uuid.uuid4().hex[:6]}"
    for obj in (namespace(ns), deployment("web", ns), service("web", ns)):
        response = admin.post(path_of(obj).rsplit("/", 1)[0], json=obj)
        assert response.status_code == 201, response.text
    yield ns
    admin.delete(f"/api/v1/namespaces/{ns}")


@pytest.fixture
def sandbox(admin: httpx.Client) -> Iterator[str]:
    """A sandbox name; its namespace is gone (or going) afterwards whatever the test did."""
    name = f"mf-{uuid.uuid4().hex[:6]}"
    yield name
    admin.delete(f"/api/v1/namespaces/{render.namespace_name(name)}")


def container(admin: httpx.Client, name: str) -> tuple[Obj, Obj]:
    """The stored Deployment's pod spec and its one container."""
    pod = admin.get(f"{DEPLOYMENTS}/{name}").json()["spec"]["template"]["spec"]
    (only,) = pod["containers"]
    return pod, only


def assert_hardened(pod: Obj, main: Obj) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    context = main["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == pod["securityContext"]["seccompProfile"]
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {k: set(v) for k, v in main["resources"].items()} == {
        "requests": {"cpu", "memory"},
        "limits": {"cpu", "memory"},
    }


def secret_ref(main: Obj, name: str) -> Obj:
    (env,) = [e for e in main["env"] if e["name"] == name]
    return dict(env["valueFrom"]["secretKeyRef"])


def test_the_apply_is_clean_labels_everything_and_ships_no_secret(
    kube: KubeControlPlane, deployed: str
) -> None:
    assert "Warning" not in deployed  # no Pod Security, deprecation or version-skew warnings
    objects = rendered(kube)
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sandboxd" for o in objects)
    namespaced = {o["kind"] for o in objects if "namespace" in o["metadata"]}
    assert namespaced == {"ServiceAccount", "ConfigMap", "Service", "Deployment"}
    assert all(o["metadata"].get("namespace", "sandboxd") == "sandboxd" for o in objects)
    assert "Secret" not in {o["kind"] for o in objects}


def test_the_control_plane_is_hardened_and_wired_to_its_secrets_catalog_and_probes(
    admin: httpx.Client,
) -> None:
    pod, main = container(admin, "sandboxd")
    assert admin.get(f"{DEPLOYMENTS}/sandboxd").json()["spec"]["replicas"] == 1
    assert pod["serviceAccountName"] == "sandboxd"
    assert main["image"] == "ghcr.io/sandboxd/sandboxd:0.1.0"
    assert_hardened(pod, main)
    assert secret_ref(main, "SANDBOXD_DATABASE_URL") == {"name": "sandboxd-database", "key": "url"}
    assert secret_ref(main, "SANDBOXD_ADMIN_TOKEN") == {"name": "sandboxd-admin", "key": "token"}
    assert secret_ref(main, "SANDBOXD_VIEW_KEY") == {"name": "sandboxd-admin", "key": "view-key"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in main["volumeMounts"]}
    assert "emptyDir" in mounts["/var/lib/sandboxd"] and "emptyDir" in mounts["/tmp"]
    assert mounts["/etc/sandboxd"]["configMap"]["name"] == "sandboxd-catalog"
    assert [(p["name"], p["containerPort"]) for p in main["ports"]] == [("http", 7070)]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert (main[probe]["httpGet"]["path"], main[probe]["httpGet"]["port"]) == (path, "http")


def test_the_control_plane_command_is_a_valid_sandboxd_configuration(
    admin: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read by `sandboxd serve`'s own options into Settings, in the container's environment (the
    Secrets' values stand in): the flags exist and the values are valid."""
    _, main = container(admin, "sandboxd")
    assert main["command"][:2] == ["sandboxd", "serve"]
    for env in main["env"]:
        monkeypatch.setenv(env["name"], env.get("value", "postgresql+psycopg://db/sandboxd"))
    serve = get_command(cli).commands["serve"]  # type: ignore[attr-defined]
    options = serve.make_context("serve", list(main["command"][2:])).params
    given = {k: v for k, v in options.items() if k in Settings.model_fields and v not in (None, [])}
    settings = Settings(**given)
    assert (settings.runtime, settings.router_namespace) == ("kubernetes", "sandboxd")
    assert settings.kubeconfig is None  # the in-cluster ServiceAccount
    assert (settings.host, settings.port) == ("0.0.0.0", 7070)
    assert settings.catalog == Path("/etc/sandboxd/sandboxd.yaml")
    assert settings.data_dir == Path("/var/lib/sandboxd")
    assert settings.database_url == "postgresql+psycopg://db/sandboxd"


def test_the_shipped_catalog_is_one_the_kubernetes_runtime_can_fork_from(
    admin: httpx.Client,
) -> None:
    config_map = admin.get("/api/v1/namespaces/sandboxd/configmaps/sandboxd-catalog").json()
    catalog = parse_catalog(config_map["data"]["sandboxd.yaml"], source="sandboxd-catalog")
    assert catalog.services and all(s.kubernetes is not None for s in catalog.services)


def test_the_router_runs_in_gateway_mode_with_no_kubernetes_credentials(
    admin: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod, main = container(admin, "sandboxd-router")
    assert_hardened(pod, main)
    assert pod["serviceAccountName"] == "sandboxd-router"
    assert pod["automountServiceAccountToken"] is False
    account = admin.get("/api/v1/namespaces/sandboxd/serviceaccounts/sandboxd-router").json()
    assert account["automountServiceAccountToken"] is False
    assert secret_ref(main, "SANDBOXD_TOKEN") == {"name": "sandboxd-admin", "key": "token"}
    monkeypatch.setenv("SANDBOXD_TOKEN", "from-the-secret")
    assert main["command"][0] == "sandboxd-router"
    args = parse_args(main["command"][1:])  # the router's own parser: every flag is real
    assert args.control_url == "http://sandboxd.sandboxd.svc.cluster.local:7070"
    assert (args.host, args.token) == ("0.0.0.0", "from-the-secret")
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"gateway": args.gateway_port, "admin": args.admin_port}
    assert (args.gateway_port, args.admin_port) == (8080, 8081)
    ready = main["readinessProbe"]["httpGet"]
    assert (ready["path"], ready["port"]) == ("/healthz", "admin")
    assert main["livenessProbe"]["tcpSocket"]["port"] == "admin"


@pytest.mark.parametrize(
    ("name", "port", "target"), [("sandboxd", 7070, "http"), ("sandboxd-router", 8080, "gateway")]
)
def test_each_service_selects_its_deployment_by_a_named_port(
    admin: httpx.Client, name: str, port: int, target: str
) -> None:
    spec = admin.get(f"/api/v1/namespaces/sandboxd/services/{name}").json()["spec"]
    assert spec["type"] == "ClusterIP" and spec["selector"] == {"app.kubernetes.io/name": name}
    assert [(p["port"], p["targetPort"]) for p in spec["ports"]] == [(port, target)]


def test_both_deployments_get_pods_under_pod_security_restricted(admin: httpx.Client) -> None:
    """The namespace enforces `restricted`: the ReplicaSets' Pods are admitted under it, and kwok
    runs them, so the Deployments become Available. And it is not a namespace sandboxd owns."""
    labels = admin.get("/api/v1/namespaces/sandboxd").json()["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "app.kubernetes.io/managed-by" not in labels
    wanted = {"sandboxd": 1, "sandboxd-router": 2}

    def available() -> bool:
        items = admin.get(DEPLOYMENTS).json()["items"]
        have = {d["metadata"]["name"]: d.get("status", {}).get("availableReplicas") for d in items}
        return have == wanted

    poll.until(available, timeout=60, what="both Deployments Available")


@pytest.mark.parametrize(("group", "resource", "namespace", "verbs"), NEEDED)
def test_rbac_grants_sandboxd_what_the_runtime_does_and_the_router_none_of_it(
    admin: httpx.Client, group: str, resource: str, namespace: str, verbs: tuple[str, ...]
) -> None:
    def refused(user: str) -> list[str]:
        return [v for v in verbs if not may(admin, user, v, resource, group=group, namespace=namespace)]  # fmt: skip

    assert refused(SANDBOXD) == []
    assert refused(ROUTER) == list(verbs)


@pytest.mark.parametrize(("verb", "group", "resource", "subresource", "namespace"), FORBIDDEN)
def test_rbac_grants_neither_anything_else(
    admin: httpx.Client, verb: str, group: str, resource: str, subresource: str, namespace: str
) -> None:
    for user in (SANDBOXD, ROUTER):
        allowed = may(admin, user, verb, resource, group=group, subresource=subresource, namespace=namespace)  # fmt: skip
        assert not allowed, user


def test_nothing_binds_the_routers_service_account(admin: httpx.Client) -> None:
    bindings = admin.get("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings").json()["items"]
    bindings += admin.get("/apis/rbac.authorization.k8s.io/v1/rolebindings").json()["items"]
    subjects = [s for b in bindings for s in b.get("subjects") or []]
    assert [s for s in subjects if s.get("name") == "sandboxd-router"] == []


def test_sandboxd_cannot_delete_create_or_adopt_a_namespace_it_does_not_own(
    admin: httpx.Client, sa: httpx.Client, baseline: str, sandbox: str
) -> None:
    refused = sa.delete(f"/api/v1/namespaces/{baseline}")
    assert denied_by(refused, "sandboxd-namespaces"), refused.text
    assert refused.json()["message"].endswith(f"(and may not add or remove it): {baseline}")
    attempts = {
        "unlabelled": namespace(render.namespace_name(sandbox)),
        "not named sbx-*": namespace(f"other-{sandbox}", MANAGED_BY),
        "adopting the baseline": namespace(baseline, MANAGED_BY),
        "without Pod Security": namespace(render.namespace_name(sandbox), MANAGED_BY),
        "privileged pods allowed": namespace(
            render.namespace_name(sandbox),
            {**MANAGED_BY, "pod-security.kubernetes.io/enforce": "privileged"},
        ),
    }
    for what, obj in attempts.items():
        response = apply(sa, path_of(obj), obj)
        assert denied_by(response, "sandboxd-namespaces"), (what, response.text)
    kept = admin.get(f"/api/v1/namespaces/{baseline}").json()["metadata"]
    assert "deletionTimestamp" not in kept
    assert "app.kubernetes.io/managed-by" not in (kept.get("labels") or {})
    for obj in attempts.values():
        if obj["metadata"]["name"] != baseline:
            assert admin.get(path_of(obj)).status_code == 404


def test_sandboxd_writes_a_sandbox_as_the_runtime_renders_it_and_deletes_it(
    admin: httpx.Client, sa: httpx.Client, baseline: str, sandbox: str
) -> None:
    ns = render.namespace_name(sandbox)
    base = {o["kind"]: admin.get(path_of(o)).json() for o in (deployment("web", baseline), service("web", baseline))}  # fmt: skip
    fork = ForkSpec(service="web", image="registry.invalid/acme/web:2")
    objects = [
        render.namespace(sandbox, expires_at="2030-01-01T00:00:00Z"),
        render.resource_quota(sandbox, render.Quota()),
        render.limit_range(sandbox),
        *render.network_policies(sandbox, router_namespace="sandboxd", baseline_namespaces=[baseline], allow_cidrs=[]),
        render.fork_deployment(base["Deployment"], sandbox=sandbox, service="web", fork=fork, agent=None),
        render.fork_service(base["Service"], sandbox=sandbox, service="web"),
    ]  # fmt: skip
    for obj in objects:
        response = apply(sa, path_of(obj), obj)
        assert response.status_code in (200, 201), response.text
    unlabel = {"metadata": {"labels": {"app.kubernetes.io/managed-by": None}}}
    stripped = sa.patch(f"/api/v1/namespaces/{ns}", json=unlabel, headers=MERGE)
    assert denied_by(stripped, "sandboxd-namespaces"), stripped.text
    for exposed in (
        service("lb", ns, type="LoadBalancer"),
        service("ext", ns, externalIPs=["192.0.2.7"]),
    ):
        response = apply(sa, path_of(exposed), exposed)
        assert denied_by(response, "sandboxd-sandbox-objects"), response.text
        assert "ClusterIP without externalIPs" in response.json()["message"]
    assert sa.delete(f"/apis/apps/v1/namespaces/{ns}/deployments/web").status_code == 200
    assert sa.delete(f"/api/v1/namespaces/{ns}").status_code == 200
    assert admin.get(f"/api/v1/namespaces/{ns}").json()["metadata"].get("deletionTimestamp")


@pytest.mark.parametrize("where", ["baseline", "sandboxd"])
def test_sandboxd_reads_but_cannot_write_the_baseline_or_its_own_namespace(
    admin: httpx.Client, sa: httpx.Client, baseline: str, where: str
) -> None:
    ns, name = (baseline, "web") if where == "baseline" else ("sandboxd", "sandboxd")
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/{name}"
    assert sa.get(path).status_code == 200
    before = admin.get(path).json()
    scaled = {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 0}}
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hard": {"pods": "0"}}}  # fmt: skip
    for response in (
        sa.patch(path, json={"spec": {"replicas": 0}}, headers=MERGE),
        apply(sa, path, {**scaled, "metadata": {"name": name, "namespace": ns}}),
        sa.delete(path),
        sa.post(f"/api/v1/namespaces/{ns}/services", json=service("intruder", ns)),
        sa.post(f"/api/v1/namespaces/{ns}/resourcequotas", json=quota),
    ):
        assert denied_by(response, "sandboxd-sandbox-objects"), response.text
        assert response.json()["message"].endswith(f"; {ns} does not")
    after = admin.get(path).json()  # its status moves on (kwok runs its pod); its spec does not
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"] and "deletionTimestamp" not in after["metadata"]


def test_sandboxd_writes_only_virtual_services_named_sandboxd(
    admin: httpx.Client, sa: httpx.Client, baseline: str
) -> None:
    ours, theirs, mesh = (virtual_service(n, baseline) for n in ("sandboxd-web", "web", "mesh-web"))
    created = apply(sa, path_of(ours), ours)
    assert created.status_code == 201, created.text
    refused = apply(sa, path_of(theirs), theirs)
    assert denied_by(refused, "sandboxd-virtualservices"), refused.text
    assert refused.json()["message"].endswith("; web is not")
    assert admin.post(path_of(mesh).rsplit("/", 1)[0], json=mesh).status_code == 201
    stored = admin.get(path_of(mesh)).json()
    for response in (sa.put(path_of(mesh), json=stored), sa.delete(path_of(mesh))):
        assert denied_by(response, "sandboxd-virtualservices"), response.text
    assert admin.get(path_of(mesh)).status_code == 200
    assert sa.delete(path_of(ours)).status_code == 200


def test_the_real_runtime_as_the_service_account_brings_a_sandbox_up_and_down(
    tmp_path: Path, kube: KubeControlPlane, admin: httpx.Client, baseline: str, sandbox: str
) -> None:
    """`sandboxd serve --runtime kubernetes --istio` authenticated as ServiceAccount sandboxd:
    what these manifests allow is enough for a sandbox's whole life, Istio routes included."""
    catalog = tmp_path / "sandboxd.yaml"
    catalog.write_text(
        f"services:\n  - name: web\n    baseline: {{url: http://web.{baseline}.svc:80}}\n"
        f"    kubernetes: {{namespace: {baseline}, deployment: web, service: web, port: 80}}\n"
    )
    kubeconfig = kube.kubeconfig_for(SANDBOXD)
    args = ["--runtime", "kubernetes", "--kubeconfig", str(kubeconfig), "--istio"]
    ns, route = render.namespace_name(sandbox), path_of(virtual_service("sandboxd-web", baseline))
    with running_sandboxd(tmp_path / "data", catalog=catalog, args=args) as server:
        with server.client() as api:
            spec = {"name": sandbox, "forks": [{"service": "web", "image": "acme/web:2"}]}
            assert api.post("/v1/sandboxes", json=spec).status_code == 201
            poll.until(lambda: phase(api, sandbox) in {"Ready", "Failed"}, timeout=90, what="Ready")
            assert phase(api, sandbox) == "Ready", server.log()
            assert admin.get(route).status_code == 200
            assert api.delete(f"/v1/sandboxes/{sandbox}").status_code == 202
            poll.until(lambda: phase(api, sandbox) == "Deleted", timeout=90, what="Deleted")
        assert "Forbidden" not in server.log()
    assert admin.get(f"/api/v1/namespaces/{ns}").status_code == 404
    assert admin.get(route).status_code == 404


def phase(api: httpx.Client, name: str) -> str:
    return str(api.get(f"/v1/sandboxes/{name}").json().get("phase"))
