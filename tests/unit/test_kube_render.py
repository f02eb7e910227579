"""The Kubernetes runtime's pure rendering: names, labels, quotas, policies, forks, Istio regex."""

from __future__ import annotations

import re

import pytest

from sandboxd.core.spec import AgentVersion, ForkSpec, is_image_reference
from sandboxd.runtime.kubernetes import render
from tests.support.kube_objects import BASELINE_DEPLOYMENT, BASELINE_SERVICE


def test_namespace_is_labelled_and_annotated() -> None:
    ns = render.namespace("pr-42", expires_at="2026-11-22T08:00:00Z")
    assert ns["metadata"]["name"] == "sbx-pr-42"
    assert ns["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "sandboxd",
        "sandboxd.dev/sandbox": "pr-42",
        "pod-security.kubernetes.io/enforce": "baseline",
    }
    assert ns["metadata"]["annotations"] == {"sandboxd.dev/expires-at": "2026-11-22T08:00:00Z"}


def test_quota_and_limits_default_to_the_design_values() -> None:
    hard = render.resource_quota("pr-42", render.Quota())["spec"]["hard"]
    assert (hard["limits.cpu"], hard["limits.memory"], hard["pods"]) == ("4", "8Gi", "20")
    assert render.limit_range("pr-42")["metadata"]["namespace"] == "sbx-pr-42"


def test_network_policies_allow_only_router_self_baseline_dns_and_allowlist() -> None:
    ingress, egress = render.network_policies(
        "pr-42",
        router_namespace="sandboxd",
        baseline_namespaces=["baseline"],
        allow_cidrs=["203.0.113.0/24"],
    )
    sources = [
        f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for f in ingress["spec"]["ingress"][0]["from"]
    ]
    assert sources == ["sandboxd", "sbx-pr-42"]
    dns, rest = egress["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    names = [
        t["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for t in rest["to"]
        if "namespaceSelector" in t
    ]
    assert names == ["sandboxd", "sbx-pr-42", "baseline"]
    assert {"ipBlock": {"cidr": "203.0.113.0/24"}} in rest["to"]


def test_fork_deployment_copies_the_template_and_applies_the_fork() -> None:
    fork = ForkSpec(
        service="cluster-mcp",
        image="acme/cluster-mcp:2.0",
        args=["--v2"],
        env={"SCHEMA": "v2", "NEW": "x"},
    )
    agent = AgentVersion(prompt_version="v2", model_version="gpt 4o/mini")
    deployment = render.fork_deployment(
        BASELINE_DEPLOYMENT, sandbox="pr-42", service="cluster-mcp", fork=fork, agent=agent
    )
    assert deployment["metadata"]["namespace"] == "sbx-pr-42"
    container = deployment["spec"]["template"]["spec"]["containers"][1]
    assert container["image"] == "acme/cluster-mcp:2.0" and container["args"] == ["--v2"]
    assert container["env"] == [
        {"name": "KEEP", "value": "1"},
        {"name": "SCHEMA", "value": "v2"},
        {"name": "NEW", "value": "x"},
    ]
    assert (
        deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "envoy:1"
    )  # untouched
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert (
        labels["sandboxd.dev/sandbox"] == "pr-42"
        and labels["sandboxd.dev/service"] == "cluster-mcp"
    )
    assert (
        labels["sandboxd.dev/prompt-version"] == "v2"
        and labels["sandboxd.dev/model-version"] == "gpt-4o-mini"
    )
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "sandboxd.dev/sandbox": "pr-42",
        "sandboxd.dev/service": "cluster-mcp",
    }
    assert (
        BASELINE_DEPLOYMENT["spec"]["template"]["spec"]["containers"][1]["image"]
        == "acme/cluster-mcp:1.0"
    )


def test_fork_service_keeps_the_ports_and_selects_the_fork() -> None:
    service = render.fork_service(BASELINE_SERVICE, sandbox="pr-42", service="cluster-mcp")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == {
        "sandboxd.dev/sandbox": "pr-42",
        "sandboxd.dev/service": "cluster-mcp",
    }
    assert (
        render.fork_upstream("pr-42", "cluster-mcp", 80)
        == "http://cluster-mcp.sbx-pr-42.svc.cluster.local:80"
    )


@pytest.mark.parametrize(
    ("image", "valid"),
    [("nginx", True), ("acme/cluster-mcp:2.0", True), ("registry.example.com:5000/a/b:v1", True),
     ("ghcr.io/acme/x@sha256:" + "a" * 64, True), ("", False), ("UPPER/case", False),
     ("a b", False), ("acme/x:tag with space", False), ("acme/x::1", False)],
)  # fmt: skip
def test_image_references(image: str, valid: bool) -> None:
    assert is_image_reference(image) is valid


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ("sandbox=pr-4", True),
        ("sandbox=pr-42", False),  # delimiter-safe: a longer key is another key
        ("sandbox=xpr-4", False),
        ("userid=alice,sandbox=pr-4,tenant=acme", True),
        ("userid=alice , sandbox = pr-4 ;prop=1;q , tenant=acme", True),
        ("sandbox=pr-4;ttl=5", True),
        ("mysandbox=pr-4", False),
        ("other=sandbox=pr-4", False),
        ("userid=alice,sandbox=pr-42,tenant=pr-4", False),
    ],
)
def test_istio_baggage_regex_is_delimiter_safe(header: str, matches: bool) -> None:
    assert bool(re.fullmatch(render.baggage_regex("sandbox", "pr-4"), header)) is matches


def test_one_virtual_service_per_baseline_service_holds_every_sandbox_then_the_baseline() -> None:
    routes = [
        render.sandbox_route(
            sandbox=name, service="echo", port=80, baggage_key="sandbox", routing_key=f"k-{name}"
        )
        for name in ("pr-9", "pr-10")
    ]
    vs = render.virtual_service(
        namespace="shop", service="echo", port=80, routes=routes, resource_version="41"
    )
    assert vs["metadata"]["name"] == "sandboxd-echo"
    assert vs["metadata"]["resourceVersion"] == "41"
    assert vs["spec"]["hosts"] == ["echo.shop.svc.cluster.local"]
    names = [rule["name"] for rule in vs["spec"]["http"]]
    assert names == ["sandbox-pr-10", "sandbox-pr-9", "baseline"]
    assert "match" not in vs["spec"]["http"][-1]
    fork = vs["spec"]["http"][1]["route"][0]["destination"]
    assert fork == {"host": "echo.sbx-pr-9.svc.cluster.local", "port": {"number": 80}}
    assert set(render.routed_sandboxes(vs)) == {"pr-9", "pr-10"}
    assert render.routed_sandboxes(vs)["pr-9"] == routes[0]
    assert render.routed_sandboxes({}) == {}


def test_a_request_without_a_limit_gets_the_request_as_its_limit() -> None:
    """Else the LimitRange's default limit (500m) below a larger request makes the pod invalid."""
    import copy

    baseline = copy.deepcopy(BASELINE_DEPLOYMENT)
    sidecar, main = baseline["spec"]["template"]["spec"]["containers"]
    main["resources"] = {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    deployment = render.fork_deployment(
        baseline, sandbox="pr-1", service="cluster-mcp", fork=ForkSpec(service="cluster-mcp"),
        agent=None,
    )  # fmt: skip
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert containers[1]["resources"]["limits"] == {"memory": "2Gi", "cpu": "2"}
    assert "resources" not in containers[0]  # nothing asked: the LimitRange's defaults apply
    assert "resources" not in sidecar  # the baseline object itself is not changed
